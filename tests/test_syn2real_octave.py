"""examples/syn2real: ``--candidate-images`` on the authors' kind of images. The stand-in builder's
``--octave-candidates`` puts the KADID generator's Octave outputs (../shared/kadid_reference) in a
candidate-images folder, and the kit reads every added row from it. Skipped where ../shared is absent."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reshape.distort_plan import output_name
from reshape.presets import PRESETS
from reshape.train_reference import LabelledImages, read_published

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "syn2real"))

import syn2real  # noqa: E402
import syn2real_standin  # noqa: E402


def _manifest_missing(kadid_reference: Path) -> set[str]:
    import csv

    with open(kadid_reference / "manifest.csv", newline="", encoding="utf-8") as f:
        return {r["dist_img"] for r in csv.DictReader(f) if r["generated"].lower() != "true"}


def test_octave_candidates_are_the_octave_bytes_and_the_kit_reads_every_added_row(
    kadid_reference: Path, tmp_path: Path
) -> None:
    """The folder holds the Octave files byte for byte under the kit's names; what the Octave run did not
    generate is our port's image, recorded; every added row of every target the kit can run resolves into
    the folder, none into reshape's own distortions."""
    (tmp_path / "pool").mkdir()
    record = syn2real_standin.octave_candidates(tmp_path, kadid_reference)
    folder = tmp_path / "candidate_images"
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["chelsea.png", "coffee.png"]
    for stem in syn2real_standin.OCTAVE_STEMS:
        assert (tmp_path / "pool" / f"{stem}.png").read_bytes() == (
            kadid_reference / f"{stem}.png"
        ).read_bytes()
    missing = _manifest_missing(kadid_reference)
    wanted = {
        f"{s}_{t:02d}_{lv:02d}.png"
        for s in syn2real_standin.OCTAVE_STEMS
        for t in syn2real_standin.UNION_TYPES
        for lv in syn2real_standin.LEVELS
    }
    assert set(record["from_octave"]) == wanted - missing and set(record["from_port"]) == wanted & missing
    assert "chelsea_03_01.png" in record["from_port"] and len(record["from_octave"]) == 46
    for name in record["from_octave"]:
        assert (folder / name).read_bytes() == (kadid_reference / name).read_bytes()
    for name in record["from_port"]:  # a real distorted image of the same reference, 512x384
        pixels = np.asarray(Image.open(folder / name))
        assert pixels.shape == (384, 512, 3) and not (folder / name).samefile(kadid_reference / "chelsea.png")
    assert json.loads((tmp_path / "octave_candidates.json").read_text("utf-8")) == record

    for target in ("livec", "koniq", "bid"):  # the names the kit's distort stage gives the added rows
        ours = [
            tmp_path / "dataset" / "images" / output_name(f"{s}.png", t, lv)
            for s in syn2real_standin.OCTAVE_STEMS
            for t in PRESETS[target]
            for lv in syn2real_standin.LEVELS
        ]
        source = tmp_path / "kadid" / "I01_01_01.png"
        train = LabelledImages([source, *ours], np.zeros(len(ours) + 1, np.float32),
                               ["I01.png"] + ["x"] * len(ours), ["source"] + ["pseudo"] * len(ours))  # fmt: skip
        read = syn2real.authors_candidates(train, folder).paths
        assert read[0] == source and all(p.parent == folder for p in read[1:])
        assert [p.name for p in read[1:]] == [p.name for p in ours]


@pytest.mark.slow  # ~3 min on a busy 2-core CPU: the builder, then two kit runs of rows b, d, e on LIVEC
def test_printed_octave_commands_run_and_read_the_octave_images(
    kadid_reference: Path, tmp_path: Path
) -> None:
    """The builder's printed pair of commands, run as printed: both exit 0; with --candidate-images every
    pseudo row of both datasets resolves into the folder; rows of the Octave references read the Octave
    files, every other row is pixel for pixel the kit's own image (so only the Octave rows differ)."""
    import subprocess

    out = subprocess.run(
        [sys.executable, str(REPO / "examples/syn2real/syn2real_standin.py"), str(tmp_path),
         "--octave-candidates", str(kadid_reference)],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    lines = [line for line in out.splitlines() if line.startswith("python") and "--rows b,d,e" in line]
    assert len(lines) == 2 and "--candidate-images" in lines[1]
    for line in lines:
        argv = shlex.split(line)
        done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "data" / "candidate_images"
    record = json.loads((tmp_path / "data" / "octave_candidates.json").read_text("utf-8"))
    for name in ("livec-ddcup", "livec-cd"):
        dataset = tmp_path / "runs" / "port" / "datasets" / name
        train = read_published(dataset, tmp_path / "data" / "kadid" / "images", origins=("pseudo",))
        read = syn2real.authors_candidates(train, folder).paths
        assert read and all(p.parent == folder for p in read)
        for ours, theirs in zip(train.paths, read, strict=True):
            if theirs.name not in record["from_octave"]:
                same = np.asarray(Image.open(ours)) == np.asarray(Image.open(theirs))
                assert same.all(), theirs.name
    cd = tmp_path / "runs" / "port" / "datasets" / "livec-cd"
    compared = syn2real_standin.port_vs_octave(cd, folder)
    assert compared["rows"] == 34 and 0 < compared["mean"] < 255
