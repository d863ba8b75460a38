"""`reshape features` at the hardware floor (issue #28): the bf16 probe behind ``--precision auto`` on
CPUs with and without native bfloat16, channels-last, loader workers, the setting that reproduces the
features of earlier versions, and file names that are not UTF-8 (issue #26, item 14)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from cli_output import without_steps
from click.testing import CliRunner
from PIL import Image

from reshape.artifacts import read_features
from reshape.cli.main import cli
from reshape.features import (
    NATIVE_BF16_CPU_FLAGS,
    NATIVE_BF16_ENV,
    centre_crop_normalise,
    cpu_flags,
    default_workers,
    native_bf16,
    resolve_precision,
    run_features,
)
from reshape.imageio import load_image

#: /proc/cpuinfo excerpts: an AVX2 server without bf16, and a Sapphire Rapids with AVX-512 BF16 and AMX
AVX2_CPUINFO = (
    "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
)
AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"


@pytest.fixture(scope="module")
def photos(tmp_path_factory, natural_photos) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name, pixels in natural_photos.items():
        Image.fromarray(pixels).save(root / f"{name}.png")
    return root


def invoke(*args: str):
    return CliRunner().invoke(cli, ["features", *args])


def test_the_bf16_probe_reads_the_cpu_flags(monkeypatch):
    monkeypatch.delenv(NATIVE_BF16_ENV, raising=False)
    assert cpu_flags(AVX2_CPUINFO) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert not native_bf16("cpu", cpu_flags(AVX2_CPUINFO))
    assert native_bf16("cpu", cpu_flags(AMX_CPUINFO))
    assert native_bf16("cpu", frozenset({"avx512_bf16"})) and native_bf16("cpu", frozenset({"amx_bf16"}))
    assert cpu_flags("processor\t: 0\n") == frozenset()  # no flags line (not x86): no native bf16
    this_machine = cpu_flags()
    if any(flag in this_machine for flag in NATIVE_BF16_CPU_FLAGS):
        assert native_bf16("cpu")


@pytest.mark.parametrize(("forced", "auto"), [("1", "bf16"), ("0", "fp32")])
def test_auto_precision_follows_the_probe_and_explicit_choices_do_not(monkeypatch, forced, auto):
    monkeypatch.setenv(NATIVE_BF16_ENV, forced)
    assert native_bf16("cpu", cpu_flags(AMX_CPUINFO)) is (forced == "1")  # the override wins
    assert resolve_precision("auto", "cpu") == auto
    assert resolve_precision("auto", "cuda") == auto
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "auto", backend="ray") == "auto"  # each Ray actor probes its device


def test_auto_on_cpus_with_and_without_native_bf16(photos, tmp_path, monkeypatch):
    """Forced probe, whole stage: ``auto`` runs and records bf16 on a bf16 CPU (the same bytes as an explicit
    ``--precision bf16`` with no loader worker), fp32 elsewhere (every row embedded again)."""
    out = tmp_path / "auto.parquet"
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    res = invoke(str(photos), "--out", str(out), "--weights", "none", "--device", "cpu", "--batch-size", "3")
    assert res.exit_code == 0, res.output
    assert "(cpu, bf16, channels-last, batch 3, " in res.stdout
    auto_bf16 = read_features(out)
    meta = auto_bf16.metadata
    assert (meta["precision"], meta["memory_format"], meta["batch_size"]) == ("bf16", "channels-last", 3)
    explicit = tmp_path / "bf16.parquet"
    run_features([photos], explicit, weights="none", device="cpu", precision="bf16", batch_size=3, workers=0)
    np.testing.assert_array_equal(read_features(explicit).embeddings, auto_bf16.embeddings)

    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    again = run_features([photos], out, weights="none", device="cpu", batch_size=3)
    assert (again.precision, again.n_embedded, again.n_reused) == ("fp32", 4, 0)
    fp32 = read_features(out)
    assert fp32.metadata["precision"] == "fp32"
    x, y = fp32.embeddings.astype(np.float64), auto_bf16.embeddings.astype(np.float64)
    assert np.abs(x - y).max() > 0  # the forced branch really changed the arithmetic
    cosine = np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert (cosine > 0.99).all(), cosine


def earlier_versions_features(folder: Path, batch_size: int) -> np.ndarray:
    """The forward of reshape before issue #28: the seeded ResNet-50 in the default layout, fp32 without
    autocast, on ``np.stack`` of the centre crops of the sorted images, batch by batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    crops = [centre_crop_normalise(load_image(p)) for p in sorted(folder.iterdir())]
    out = []
    for start in range(0, len(crops), batch_size):
        with torch.inference_mode():
            out.append(model(torch.from_numpy(np.stack(crops[start : start + batch_size]))).numpy())
    return np.concatenate(out)


def test_fp32_contiguous_reproduces_earlier_versions_byte_for_byte(photos, tmp_path):
    old = earlier_versions_features(photos, batch_size=3)
    out = tmp_path / "repro.parquet"
    run_features([photos], out, weights="none", device="cpu", precision="fp32", memory_format="contiguous",
                 batch_size=3, workers=2)  # fmt: skip
    repro = read_features(out)
    assert repro.metadata["memory_format"] == "contiguous"
    np.testing.assert_array_equal(repro.embeddings, old)
    fast = tmp_path / "fast.parquet"
    run_features([photos], fast, weights="none", device="cpu", precision="fp32", batch_size=3)
    # channels-last changes the order of the sums only: equal up to float rounding
    np.testing.assert_allclose(read_features(fast).embeddings, old, rtol=1e-4, atol=1e-5)


def test_default_workers_leave_the_cores_to_the_forward():
    assert [default_workers("cpu", cpus=n) for n in (1, 2, 4, 16)] == [1, 1, 2, 4]
    assert [default_workers("cuda", cpus=n) for n in (1, 2, 16)] == [1, 1, 8]


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")
@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_name_that_is_not_utf8_stops_before_any_work(photos, tmp_path, where):
    """Issue #26 (14): such a name used to fail with a UnicodeEncodeError after every image was embedded."""
    root = tmp_path / "refs"
    folder = os.path.join(os.fsencode(root), b"r\xe9fs" if where == "folder" else b"ok")
    os.makedirs(folder)
    png = (photos / "coffee.png").read_bytes()
    Path(os.fsdecode(os.path.join(folder, b"good.png"))).write_bytes(png)
    with open(os.path.join(folder, b"caf\xe9.png" if where == "file" else b"other.png"), "wb") as fh:
        fh.write(png)
    out = tmp_path / "f.parquet"
    res = invoke(str(root), "--out", str(out), "--weights", "none", "--device", "cpu")
    assert res.exit_code == 2, res.output
    err = without_steps(res.stderr)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in res.output, res.stderr
    assert ("caf\\xe9.png" if where == "file" else "r\\xe9fs") in err and "not valid UTF-8" in err
    assert "loading the" not in res.stderr  # no encoder loaded, nothing hashed or embedded
    assert not out.exists()
