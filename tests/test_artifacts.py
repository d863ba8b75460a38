"""reshape.artifacts: every schema loads; writers validate; readers reject anything else with one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reshape.artifacts import (
    Features,
    load_schema,
    read_artifact_metadata,
    read_csv,
    read_features,
    schema_names,
    sidecar_path,
    write_csv,
    write_features,
)
from reshape.errors import BadInputError

FEATURE_META = {
    "encoder": "resnet50",
    "weights": "none",
    "preprocessing": "centre-crop 224",
    "image_root": "/data",
}


def _features(n=5, d=8, seed=0) -> Features:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "image": [f"img{i}.png" for i in range(n)],
            "sha256": ["0" * 64] * n,
            "width": [512] * n,
            "height": [384] * n,
        }
    )
    return Features(frame, rng.normal(size=(n, d)).astype(np.float32), dict(FEATURE_META))


def test_every_schema_is_well_formed():
    names = schema_names()
    for required in (
        "features",
        "selection",
        "distortion_manifest",
        "labels",
        "pyiqa_meta",
        "train",
        "prune_indices",
        "dataset_card",
    ):
        assert required in names
    for name in names:
        s = load_schema(name)
        assert s.name == name and s.version >= 1 and s.format in {"parquet", "csv", "json"}
        assert len(set(s.column_names)) == len(s.column_names)
        assert all(c.description for c in s.columns)


def test_features_roundtrip(tmp_path):
    f = _features()
    p = tmp_path / "f.parquet"
    write_features(p, f)
    g = read_features(p)
    np.testing.assert_array_equal(g.embeddings, f.embeddings)
    assert g.images == f.images
    assert g.metadata["dim"] == 8 and g.metadata["encoder"] == "resnet50"
    assert "reshape_version" in g.metadata and "created" in g.metadata
    t = pq.read_table(p)
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert t.schema.field("width").type == pa.int32()
    assert read_artifact_metadata(p)["image_root"] == "/data"


def test_features_missing_metadata_rejected_on_write(tmp_path):
    f = _features()
    del f.metadata["encoder"]
    with pytest.raises(BadInputError, match="lacks metadata encoder"):
        write_features(tmp_path / "f.parquet", f)
    assert not list(tmp_path.iterdir())


def test_features_with_nan_rejected(tmp_path):
    f = _features()
    f.embeddings[3, 2] = np.nan
    p = tmp_path / "f.parquet"
    write_features(p, f)
    with pytest.raises(BadInputError, match=r"row 3: embedding of 'img3.png' has NaN"):
        read_features(p)


def test_duplicate_ids_rejected(tmp_path):
    f = _features()
    f.frame.loc[4, "image"] = "img1.png"
    p = tmp_path / "f.parquet"
    write_features(p, f)
    with pytest.raises(BadInputError, match="row 4: duplicate image id 'img1.png'"):
        read_features(p)


def test_foreign_parquet_rejected(tmp_path):
    p = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), p)
    with pytest.raises(BadInputError, match="not a reshape features artifact"):
        read_features(p)
    q = tmp_path / "not.parquet"
    q.write_text("hello")
    with pytest.raises(BadInputError, match="not a readable Parquet"):
        read_features(q)


def test_wrong_artifact_kind_rejected(tmp_path):
    from reshape.artifacts import read_parquet, write_parquet

    p = tmp_path / "f.parquet"
    write_features(p, _features())
    with pytest.raises(BadInputError, match="is a features artifact, expected selection"):
        read_parquet(p, "selection")
    t = pq.read_table(p).drop(["sha256"])
    with pytest.raises(BadInputError, match="no column 'sha256'"):
        write_parquet(tmp_path / "g.parquet", t, "features", {**FEATURE_META, "dim": 8})


def _labels_frame() -> pd.DataFrame:
    return pd.DataFrame({"path": ["a_01_01.png", "a_01_03.png"], "score": [4.5, 3.25]})


def test_csv_roundtrip_with_sidecar(tmp_path):
    p = tmp_path / "meta_info.csv"
    write_csv(p, _labels_frame(), "pyiqa_meta", {"fingerprint": "abc"})
    assert p.read_text().splitlines()[0] == "path,score"
    df = read_csv(p, "pyiqa_meta")
    assert df["score"].tolist() == [4.5, 3.25]
    meta = json.loads(sidecar_path(p).read_text())
    assert meta["fingerprint"] == "abc" and meta["reshape.schema"] == "pyiqa_meta/1"
    assert read_artifact_metadata(p)["fingerprint"] == "abc"


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("path,score\na.png,4\nb.png,abc\n", "line 3: column 'score' value 'abc' is not a valid float64"),
        ("path,score\na.png,4\nb.png,nan\n", "line 3: column 'score' is not finite"),
        ("path,score\na.png,4\n,3\n", "line 3: column 'path' is empty"),
        ("path,mos\na.png,4\n", "missing column(s) score"),
        ("", "empty file"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, content, expect):
    p = tmp_path / "meta.csv"
    p.write_text(content)
    with pytest.raises(BadInputError) as info:
        read_csv(p, "pyiqa_meta")
    assert str(p) in str(info.value) and expect in str(info.value)


def test_int_and_bool_columns(tmp_path):
    df = pd.DataFrame(
        {
            "index": [0, 1],
            "image": ["a", "b"],
            "cluster": [-1, 3],
            "cluster_size": [1, 25],
            "kept": [True, False],
        }
    )
    p = tmp_path / "idx.csv"
    write_csv(p, df, "prune_indices")
    back = read_csv(p, "prune_indices")
    assert back["kept"].tolist() == [True, False] and back["cluster"].dtype == np.int64
    p.write_text("index,image,cluster,cluster_size,kept\n0,a,1.5,1,true\n")
    with pytest.raises(BadInputError, match="line 2: column 'cluster' value '1.5' is not an integer"):
        read_csv(p, "prune_indices")
