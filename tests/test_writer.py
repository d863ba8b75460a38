"""reshape.writer: one output folder and its journal, on a local disk and on a real S3 endpoint (moto)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid

import pytest
from PIL import Image
from shard_toys import folder_bytes

from reshape import storage
from reshape.errors import BadInputError, ResourceError
from reshape.fileio import TMP_PREFIX, sha256_bytes
from reshape.outputs import OutputLock
from reshape.writer import COMPACT_AT, JOURNAL_DIR, FileRecord, Journal, OutputFolder, temp_target


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket on a moto S3 server on 127.0.0.1 (skipped where moto's server is not installed)."""
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as fh:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT
        )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    boto3.client("s3").create_bucket(Bucket="reshape-test")
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        pytest.skip(f"moto server did not start: {log.read_text()[-300:]}")
                    time.sleep(0.2)
            yield "s3://reshape-test"
        finally:
            server.terminate()
            server.wait(10)


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('s3')}/{uuid.uuid4().hex}/out"


def test_put_list_verify_and_delete(location):
    folder = OutputFolder(location)
    record = folder.put_bytes("a.png", b"first bytes", meta={"k": 1})
    assert (record.name, record.sha256, record.size, record.meta) == (
        "a.png",
        sha256_bytes(b"first bytes"),
        11,
        {"k": 1},
    )
    listing = folder.listing()
    assert set(listing) == {"a.png"}  # no temporary file or key left behind
    assert (listing["a.png"].size, listing["a.png"].mtime_ns) == (record.size, record.mtime_ns)
    assert folder.holds(record, listing["a.png"])
    assert folder.read("a.png") == b"first bytes"
    # other bytes of another size: changed without reading; of the same size: read and hashed
    assert not folder.holds(record, storage.FileStat(12, record.mtime_ns))
    time.sleep(1.1)  # S3 keeps whole seconds
    folder.put_bytes("a.png", b"other bytes")
    assert not folder.holds(record, folder.listing()["a.png"])
    assert folder.holds(FileRecord("a.png", sha256_bytes(b"other bytes")), folder.listing()["a.png"])
    folder.delete("a.png")
    assert folder.listing() == {}
    assert not folder.holds(record, None)


def test_local_put_is_atomic_and_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        folder = OutputFolder(tmp_path / "out")
        folder.put_bytes("x.png", b"data")
    finally:
        os.umask(old)
    from reshape.outputs import file_mode

    assert stat.S_IMODE((tmp_path / "out" / "x.png").stat().st_mode) == file_mode()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.png"]


def test_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import errno

    def full(location, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "write_bytes", full)
    with pytest.raises(ResourceError) as info:
        OutputFolder(tmp_path).put_bytes("img.png", b"x")
    assert str(info.value) == f"{tmp_path / 'img.png'}: No space left on device"


def test_stale_temps_of_own_names_only(location):
    folder = OutputFolder(location)
    folder.put_bytes("keep.txt", b"x")
    temps = (
        f"{TMP_PREFIX}a_01_01.png.x1y2z3.png",
        f"{TMP_PREFIX}a_01_02.png.0a1b2c3d",
        f"{TMP_PREFIX}notes.md.q",
    )
    for name in temps:
        storage.write_bytes(folder.path(name), b"partial")
    assert temp_target(f"{TMP_PREFIX}a_01_01.png.x1y2z3.png") >= {"a_01_01.png"}
    assert folder.remove_stale_temps({"a_01_01.png", "a_01_02.png"}) == 2
    assert set(folder.listing()) == {"keep.txt", f"{TMP_PREFIX}notes.md.q"}


def test_journal_claims_records_merges_and_compaction(location):
    folder = OutputFolder(location)
    journal = Journal(folder)
    journal.write_shard("k1", [FileRecord("a.png"), FileRecord("b.png")])  # claims first
    records = Journal(folder).load()
    assert sorted(records) == ["a.png", "b.png"]
    assert not any(r.confirmed for r in records.values())
    done = [folder.put_bytes("a.png", b"A", meta={"x": 1})]
    journal.write_shard("k1", done)  # the finished shard replaces its claims
    loaded = Journal(folder)
    assert {n: r.sha256 for n, r in loaded.load().items()} == {"a.png": sha256_bytes(b"A")}
    loaded.append(
        loaded.shard_records + [FileRecord("gone.png", deleted=True)], drop=loaded.shard_segments_loaded()
    )
    names = sorted(OutputFolder(folder.path(JOURNAL_DIR)).listing())
    assert names == ["merged-0000000001.jsonl"]
    again = Journal(folder)
    live = again.load()
    assert live["a.png"].meta == {"x": 1} and live["a.png"].mtime_ns == done[0].mtime_ns
    for i in range(COMPACT_AT):
        again.append([FileRecord(f"n{i}.png", "0" * 64, 1, 1)])
    live = again.load()
    again.compact(live)
    assert len(OutputFolder(folder.path(JOURNAL_DIR)).listing()) == 1
    assert sorted(Journal(folder).load()) == sorted(live)


def test_distort_to_real_s3_matches_the_local_folder_and_resumes(
    s3, natural_photos, stand_ins, tmp_path, caplog
):
    from reshape.distort import run_distort
    from reshape.distort_seal import SEAL_NAME
    from reshape.steps import STEP_LOGGER

    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(natural_photos[name]).resize((64, 48)).save(refs / f"{name}.png")
    local = run_distort(refs, tmp_path / "local", types=[1, 11, 18], seed=3)
    prefix = f"{s3}/{uuid.uuid4().hex}/dist"
    summary = run_distort(refs, prefix, types=[1, 11, 18], seed=3)
    assert summary.n_written == local.n_written == 18
    listing = OutputFolder(prefix).listing()
    assert not [n for n in listing if n.startswith(TMP_PREFIX)]  # objects are put whole, no temp keys
    assert {
        n: storage.read_bytes(f"{prefix}/{n}") for n in listing if n.endswith((".png", ".csv"))
    } == folder_bytes(tmp_path / "local")
    # the finished run sealed the prefix: a rerun ends after one listing of it (its step line says so)
    assert storage.is_file(f"{prefix}/{JOURNAL_DIR}/{SEAL_NAME}")
    with caplog.at_level("INFO", logger=STEP_LOGGER):
        assert run_distort(refs, prefix, types=[1, 11, 18], seed=3).n_reused == 18
    assert "as its last run sealed it" in caplog.text
    storage.remove(f"{prefix}/coffee_11_03.png")
    again = run_distort(refs, prefix, types=[1, 11, 18], seed=3)
    assert (again.n_written, again.n_reused) == (1, 17)
    # a second run while one holds the lease on the prefix refuses
    with OutputLock(prefix), pytest.raises(BadInputError, match="another reshape run holds this output"):
        run_distort(refs, prefix, types=[1, 11, 18], seed=3)
    shutil.rmtree(tmp_path / "local")


def test_journal_lines_read_the_same_with_orjson_and_json(tmp_path):
    """The `fast` extra's parser (orjson) and the standard library's give the same records for what the
    journal writes, a damaged line skipped by both, and a real journal loads the records it was given."""
    import json

    from reshape.writer import _decode, _encode

    orjson = pytest.importorskip("orjson")
    records = [
        FileRecord(
            "a_01_01.png", "ab" * 32, 12, 1_700_000_000_123_456_789, {"seed": 2**62, "ref_stat": [3, 4]}
        ),
        FileRecord("é b_02_05.bmp", deleted=True),
        FileRecord("claimed.png"),
        FileRecord("x.png", "cd" * 32, 0, 0, {"parameter": 0.1, "denoiser": None, "name": "\u2028"}),
    ]
    data = _encode(records) + b'{"name": "half written", "sha25\n'
    assert _decode(data, loads=orjson.loads) == _decode(data, loads=json.loads) == records
    folder = OutputFolder(tmp_path)
    Journal(folder).append(records)
    assert Journal(folder).load() == {r.name: r for r in records if not r.deleted}


def test_put_chunks_streams_the_same_file_and_a_failure_keeps_the_old_one(location):
    """A journal segment is written chunk by chunk (700k records are ~350 MB as one string): the file and
    its record are those put_bytes gives; a failure in the middle leaves the previous file whole and no
    temporary file or key behind."""
    folder = OutputFolder(location)
    chunks = [b"first chunk\n", b"", b"second \xc3\xa9 chunk\n" * 1000]
    record = folder.put_chunks("seg.jsonl", iter(chunks), meta={"k": 2})
    assert folder.read("seg.jsonl") == b"".join(chunks)
    assert (record.sha256, record.size, record.meta) == (sha256_bytes(b"".join(chunks)), 16012, {"k": 2})
    assert folder.holds(record, folder.listing()["seg.jsonl"])

    def failing():
        yield b"half of a new segment\n"
        raise OSError(28, "No space left on device")

    with pytest.raises(ResourceError, match="seg.jsonl: No space left on device"):
        folder.put_chunks("seg.jsonl", failing())
    assert folder.read("seg.jsonl") == b"".join(chunks)
    assert set(folder.listing()) == {"seg.jsonl"}


def test_journal_append_writes_a_segment_in_chunks(tmp_path, monkeypatch):
    """More records than one encoding chunk make one segment whose lines are the records in order."""
    import reshape.writer as writer

    monkeypatch.setattr(writer, "ENCODE_CHUNK", 3)  # the chunk size, not our code under test: 10 records
    records = [FileRecord(f"{i}.png", sha256_bytes(str(i).encode()), i, i, {"i": i}) for i in range(10)]
    folder = OutputFolder(tmp_path)
    Journal(folder).append(records)
    segments = list((tmp_path / JOURNAL_DIR).iterdir())
    assert len(segments) == 1
    assert segments[0].read_bytes().decode().splitlines() == [r.to_line() for r in records]
    assert list(Journal(folder).load().values()) == records
