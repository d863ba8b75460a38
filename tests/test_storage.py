"""reshape.storage: one interface over local paths, file:// URIs and fsspec/pyarrow filesystems."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reshape import storage
from reshape.errors import BadInputError
from reshape.fileio import TMP_PREFIX


def test_scheme_and_locality(tmp_path):
    assert storage.scheme(tmp_path) == ""
    assert storage.scheme("s3://bucket/key") == "s3"
    assert storage.scheme("GS://bucket/key") == "gs"
    assert storage.is_local("file:///data/x") and storage.is_local("relative/dir")
    assert not storage.is_local("s3://bucket/x")
    assert storage.local_path(f"file://{tmp_path}/a.bin") == tmp_path / "a.bin"
    assert storage.join("s3://bucket/prefix/", "a", "b.png") == "s3://bucket/prefix/a/b.png"
    assert storage.join(str(tmp_path), "a") == str(tmp_path / "a")


@pytest.mark.parametrize("form", ["path", "file-uri"])
def test_local_round_trip_is_atomic(tmp_path, form):
    base = str(tmp_path) if form == "path" else f"file://{tmp_path}"
    target = storage.join(base, "sub", "x.bin") if form == "path" else f"{base}/sub/x.bin"
    storage.write_bytes(target, b"payload")
    assert (tmp_path / "sub" / "x.bin").read_bytes() == b"payload"
    assert storage.read_bytes(target) == b"payload"
    assert storage.exists(target) and storage.is_file(target)
    assert storage.listdir(tmp_path / "sub") == ["x.bin"]
    storage.remove(target)
    assert not storage.exists(target)


def test_staged_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError), storage.staged_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_memory_filesystem_goes_through_temp_key_then_move():
    """memory:// is served by fsspec, so this exercises the remote (non-rename) code path without network."""
    root = f"memory://reshape-test-{uuid.uuid4().hex}"
    table = pa.table({"a": [1, 2, 3]})
    with storage.staged_output(f"{root}/out/t.parquet") as tmp:
        pq.write_table(table, tmp)
    storage.write_bytes(f"{root}/out/b.bin", b"xyz")
    assert storage.listdir(f"{root}/out") == ["b.bin", "t.parquet"]  # no temporary key left behind
    fs, path = storage.filesystem(f"{root}/out/t.parquet")
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert storage.read_bytes(f"{root}/out/b.bin") == b"xyz"

    with pytest.raises(RuntimeError), storage.staged_output(f"{root}/out/c.parquet") as tmp:
        raise RuntimeError("writer crashed")
    assert not storage.exists(f"{root}/out/c.parquet")

    storage.write_bytes(f"{root}/out/{TMP_PREFIX}stale", b"")
    assert storage.remove_stale_temps(f"{root}/out") == 1
    assert storage.listdir(f"{root}/out") == ["b.bin", "t.parquet"]
    assert storage.listdir(f"{root}/absent") == []


def test_unknown_scheme_is_bad_input():
    with pytest.raises(BadInputError, match="nosuchscheme://bucket/x"):
        storage.write_bytes("nosuchscheme://bucket/x", b"")
