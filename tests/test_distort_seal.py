"""The seal of a finished distort run (reshape.distort_seal, issue 30): a rerun with nothing to do.

A finished run seals its folder. A rerun with the same inputs, and nothing changed, ends after one
folder listing: it reads no journal record and no image, and gives the same result and files as the full
take-over. Any change takes the full path, which decides as before: a touched, edited, removed or replaced
output; a new file; a journal segment; another seed; a seal from other code. A run that does not finish
leaves no seal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_output import one_line_error
from click.testing import CliRunner
from opened_files import opened_files
from shard_toys import folder_bytes

from reshape.cli.main import cli
from reshape.distort import run_distort
from reshape.distort_seal import SEAL_NAME, code_digest
from reshape.writer import JOURNAL_DIR

PLAN = "ref_im,dist_type\nI01.png,1\nI02.png,11\nI03.png,18\nI03.png,2\n"
N_IMAGES = 4 * 5
SEALED = "as its last run sealed it"


@pytest.fixture(scope="module")
def refs(kadid_named_refs) -> Path:
    return kadid_named_refs


@pytest.fixture
def plan_csv(tmp_path) -> Path:
    (tmp_path / "plan.csv").write_text(PLAN)
    return tmp_path / "plan.csv"


def invoke(refs: Path, plan: Path, out: Path, *extra: str, seed: str = "3"):
    """The CLI's click Result (exit code, stdout's summary, stderr's step lines and error)."""
    args = ["distort", str(refs), "--plan", str(plan), "--format", "bmp", "--out", str(out), "--seed", seed]
    result = CliRunner().invoke(cli, [*args, *extra])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def fresh(refs: Path, plan: Path, out: Path) -> None:
    result = invoke(refs, plan, out)
    assert result.exit_code == 0, result.output
    assert SEALED not in result.stderr and (out / JOURNAL_DIR / SEAL_NAME).is_file()


def written(result) -> int:
    """Images written, from the summary line ``distort: N images ... (W written, R already up to date)``."""
    assert result.exit_code == 0, result.output
    return int(result.stdout.split("(")[1].split(" written")[0])


def test_a_sealed_rerun_reads_no_record_and_gives_the_full_result(refs, plan_csv, tmp_path):
    out = tmp_path / "out"
    first = run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3, workers=1)
    seal = json.loads((out / JOURNAL_DIR / SEAL_NAME).read_text())
    assert (first.n_written, seal["n_images"], seal["code"]) == (N_IMAGES, N_IMAGES, code_digest())
    before = folder_bytes(out)
    with opened_files() as opened:
        sealed = run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3, workers=2)  # any worker count
    journal = [Path(p).name for p in opened if Path(p).parent == out / JOURNAL_DIR]
    assert journal == [SEAL_NAME], journal  # of the journal folder, only the seal is read
    assert not [p for p in opened if p.endswith((".png", ".bmp"))]
    assert folder_bytes(out) == before
    # the full take-over of the same folder (seal removed) comes to the same result
    (out / JOURNAL_DIR / SEAL_NAME).unlink()
    with opened_files() as opened:
        full = run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3, workers=1)
    assert any(Path(p).parent.name == JOURNAL_DIR and p.endswith(".jsonl") for p in opened)
    assert not [p for p in opened if p.endswith((".png", ".bmp"))]  # no image read there either
    fields = "n_references n_images n_written n_reused n_removed skipped denoiser manifest".split()
    assert [getattr(sealed, f) for f in fields] == [getattr(full, f) for f in fields]
    assert (full.n_written, full.n_reused) == (0, N_IMAGES)
    assert folder_bytes(out) == before
    assert (out / JOURNAL_DIR / SEAL_NAME).is_file()  # the full path sealed it again


def _touch(out: Path) -> None:
    os.utime(out / "I01_01_03.bmp", ns=(1, 1_000_000_000))  # same bytes, another mtime


def _edit(out: Path) -> None:
    data = bytearray((out / "I02_11_02.bmp").read_bytes())
    data[-1] ^= 0xFF
    (out / "I02_11_02.bmp").write_bytes(bytes(data))


def _link(out: Path) -> None:
    target = out / "I03_18_01.bmp"
    elsewhere = out.parent / "elsewhere.bmp"
    target.rename(elsewhere)
    target.symlink_to(elsewhere)


def _segment(out: Path) -> None:
    segment = next((out / JOURNAL_DIR).glob("merged-*.jsonl"))
    segment.write_bytes(segment.read_bytes())  # the same records, rewritten


def _other_code(out: Path) -> None:
    seal = out / JOURNAL_DIR / SEAL_NAME
    seal.write_text(json.dumps({**json.loads(seal.read_text()), "code": "0" * 64}))


CHANGES = {
    # what changed: (how, exit code, images written, what stderr says)
    "an output touched": (_touch, 0, 0, None),
    "an output edited": (_edit, 2, 0, "were edited since"),
    "an output removed": (lambda out: (out / "I03_02_05.bmp").unlink(), 0, 1, None),
    "an output replaced by a link": (_link, 2, 0, "is a symbolic link"),
    "a file added": (lambda out: (out / "notes.txt").write_text("mine"), 0, 0, None),
    "a journal segment rewritten": (_segment, 0, 0, None),
    "a seal made by other code": (_other_code, 0, 0, None),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_takes_the_full_path(refs, plan_csv, tmp_path, change):
    out = tmp_path / "out"
    fresh(refs, plan_csv, out)
    rerun = invoke(refs, plan_csv, out)
    assert written(rerun) == 0 and SEALED in rerun.stderr  # sealed: nothing to do
    how, want_code, n_written, says = CHANGES[change]
    how(out)
    result = invoke(refs, plan_csv, out)
    assert SEALED not in result.stderr
    if want_code:
        assert says in one_line_error(result, want_code)
        assert not (out / JOURNAL_DIR / SEAL_NAME).exists()  # the refused run removed the old seal
        return
    assert written(result) == n_written
    assert json.loads((out / JOURNAL_DIR / SEAL_NAME).read_text())["n_images"] == N_IMAGES  # sealed again
    again = invoke(refs, plan_csv, out)
    assert written(again) == 0 and SEALED in again.stderr


def test_other_inputs_take_the_full_path(refs, plan_csv, tmp_path):
    out = tmp_path / "out"
    fresh(refs, plan_csv, out)
    other_seed = invoke(refs, plan_csv, out, seed="4")  # every image again
    assert written(other_seed) == N_IMAGES and SEALED not in other_seed.stderr
    fewer = tmp_path / "fewer.csv"
    fewer.write_text(PLAN.rsplit("I03.png,2", 1)[0])  # one row less: its five images removed
    result = run_distort(refs, out, fmt="bmp", plan=fewer, seed=4)
    assert (result.n_written, result.n_removed, result.n_images) == (0, 5, N_IMAGES - 5)
    again = invoke(refs, fewer, out, seed="4")
    assert written(again) == 0 and SEALED in again.stderr


def test_a_run_that_does_not_finish_leaves_no_seal(refs, plan_csv, tmp_path):
    """A bad reference stops the run, or is skipped: the old seal is gone and no new one is written."""
    copy = tmp_path / "refs"
    copy.mkdir()
    for p in refs.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    fresh(copy, plan_csv, out)
    (out / "I02_11_04.bmp").unlink()
    (copy / "I02.png").write_bytes(b"not an image")
    assert "I02.png" in one_line_error(invoke(copy, plan_csv, out))
    assert not (out / JOURNAL_DIR / SEAL_NAME).exists()
    skipped = invoke(copy, plan_csv, out, "--skip-bad")
    assert written(skipped) == 0 and "skipped 1 bad reference" in skipped.stdout
    assert not (out / JOURNAL_DIR / SEAL_NAME).exists()
    assert SEALED not in invoke(copy, plan_csv, out, "--skip-bad").stderr


@pytest.mark.parametrize(
    "options",
    [{"types": [1, 11], "levels": [1, 3]}, {"random_types": 2, "levels": [2, 4]}],
    ids=["a folder, types x levels", "--random-types"],
)
def test_grid_and_drawn_plans_are_sealed_too(refs, tmp_path, options):
    """The seal of the other inputs (a features Parquet: test_distort_plan_kadis): the rerun keeps it."""
    out = tmp_path / "out"
    first = run_distort(refs, out, seed=5, **options)
    seal = out / JOURNAL_DIR / SEAL_NAME
    sealed_at = (seal.stat().st_ino, seal.stat().st_mtime_ns)
    again = run_distort(refs, out, seed=5, **options)
    assert (again.n_written, again.n_reused, again.n_images) == (0, first.n_images, first.n_images)
    assert (seal.stat().st_ino, seal.stat().st_mtime_ns) == sealed_at  # not removed and written again
    assert run_distort(refs, out, seed=6, **options).n_written == first.n_images  # another seed: full path


MINE = '{"mine": true}\n'


@pytest.mark.parametrize("in_place", ["a folder", "a file that is not a seal"])
def test_a_seal_that_cannot_be_written_costs_the_next_run_time_only(refs, plan_csv, tmp_path, in_place):
    """Something else in the seal's place is left as it is: the run still succeeds, warns, and reruns
    check every output."""
    out = tmp_path / "out"
    where = out / JOURNAL_DIR / SEAL_NAME
    where.parent.mkdir(parents=True)
    if in_place == "a folder":
        where.mkdir()
    else:
        where.write_text(MINE)
    first = invoke(refs, plan_csv, out)
    assert written(first) == N_IMAGES and "was not sealed" in first.stderr
    again = invoke(refs, plan_csv, out)
    assert written(again) == 0 and SEALED not in again.stderr
    assert where.is_dir() if in_place == "a folder" else where.read_text() == MINE  # left as it was
