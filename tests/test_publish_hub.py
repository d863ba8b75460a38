"""The published folder as a Hugging Face dataset: `datasets.load_dataset(<folder>)`, the card's YAML through
huggingface_hub's own DatasetCard, and `--push-to-hub` against a local Hub API server on 127.0.0.1.

The server implements the endpoints huggingface_hub's create_repo / create_branch / create_commit use
(repo creation, README YAML validation, branch, preupload, ndjson commit) and records every request.
It answers "regular" upload mode for every file, so the LFS / Xet upload path of large files is not
exercised; neither is a real Hub's authentication or quota.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_publish_verify import pipeline_output  # noqa: F401  (fixture)

from reshape.cli.main import cli
from reshape.errors import StageError
from reshape.hub import push_folder


def _publish(out: Path, *args: str) -> None:
    res = CliRunner().invoke(cli, ["publish", str(out), *map(str, args)], catch_exceptions=False)
    assert res.exit_code == 0, res.output


@pytest.fixture
def published(pipeline_output: dict[str, Path]) -> Path:  # noqa: F811
    out = pipeline_output["tmp"] / "kadid-reshaped"
    _publish(out, "--from-run", pipeline_output["run"], "--copy-source")
    return out


def test_load_dataset_on_the_folder_gives_images_scores_and_provenance(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = datasets.load_dataset(str(published), cache_dir=str(tmp_path / "hf-cache"))
    assert list(ds) == ["train"]
    train = ds["train"]
    assert set(train.column_names) == {"image", "dmos", "origin", "ref_img", "dist_type", "dist_level"}
    table = pd.read_csv(published / "train.csv").set_index("dist_img")
    assert len(train) == len(table) == 16  # --copy-source: every row's image is in the folder
    for row in train:
        rel = Path(row["image"].filename).relative_to(published).as_posix()
        assert row["image"].size == (32, 24)
        expected = table.loc[rel]
        assert row["dmos"] == pytest.approx(expected["dmos"])
        assert (row["origin"], row["ref_img"]) == (expected["origin"], expected["ref_img"])
        assert (row["dist_type"], row["dist_level"]) == (expected["dist_type"], expected["dist_level"])
        assert (published / row["ref_img"]).is_file()


def test_card_yaml_parses_with_huggingface_hub(published: Path) -> None:
    from huggingface_hub import DatasetCard, DatasetCardData

    card = DatasetCard.load(published / "README.md")
    assert isinstance(card.data, DatasetCardData)
    data = card.data.to_dict()
    assert data["license"] == "other"
    assert data["license_link"].startswith("http")
    assert data["size_categories"] == ["n<1K"]
    assert data["task_categories"]
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "images/**"}], "default": True}
    ]
    assert card.text.lstrip().startswith("# kadid-reshaped")
    assert "load_dataset('path/to/this/folder', split='train')" in card.text


class _HubHandler(BaseHTTPRequestHandler):
    """Just enough of the Hub's HTTP API for create_repo, create_branch and create_commit."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path.split("?")[0]
        self.server.requests.append(
            {"path": path, "auth": self.headers.get("Authorization"), "body": raw}  # type: ignore[attr-defined]
        )
        base = f"http://127.0.0.1:{self.server.server_port}"
        if path == "/api/repos/create":
            body = json.loads(raw)
            return self._reply(200, {"url": f"{base}/datasets/{body['organization']}/{body['name']}"})
        if path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        parts = path.split("/")  # /api/datasets/OWNER/NAME/<action>/<revision>
        if len(parts) >= 7 and parts[:3] == ["", "api", "datasets"]:
            action = parts[5]
            if action == "branch":
                return self._reply(200, {})
            if action == "preupload":
                files = json.loads(raw)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._reply(200, {"files": modes})
            if action == "commit":
                url = f"{base}/datasets/{parts[3]}/{parts[4]}/commit/{'1' * 40}"
                return self._reply(200, {"commitUrl": url, "commitOid": "1" * 40})
        return self._reply(404, {"error": f"not implemented: {path}"})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_reshape_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def test_push_to_hub_uploads_every_listed_file(
    hub,
    pipeline_output: dict[str, Path],  # noqa: F811
) -> None:
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", pipeline_output["run"])
    (out / "my-notes.txt").write_text("not part of the dataset")
    res = CliRunner().invoke(
        cli,
        ["publish", str(out), "--from-run", str(pipeline_output["run"])]
        + ["--push-to-hub", "someone/kadid-reshaped", "--private", "--revision", "v1"],
    )
    assert res.exit_code == 0, res.output
    assert "pushed to http://127.0.0.1" in res.output
    requests = hub.requests
    actions = [r["path"] for r in requests]
    assert actions[0] == "/api/repos/create"
    assert json.loads(requests[0]["body"]) == {
        "name": "kadid-reshaped",
        "organization": "someone",
        "visibility": "private",
        "type": "dataset",
    }
    assert "/api/datasets/someone/kadid-reshaped/branch/v1" in actions
    assert "/api/datasets/someone/kadid-reshaped/preupload/v1" in actions
    assert actions[-1] == "/api/datasets/someone/kadid-reshaped/commit/v1"
    assert all(r["auth"] == "Bearer hf_reshape_test_token" for r in requests)
    lines = [json.loads(x) for x in requests[-1]["body"].splitlines()]
    assert lines[0]["key"] == "header"
    sent = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines[1:]}
    listed = [line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()]
    assert sorted(sent) == sorted([*listed, "SHA256SUMS"])
    assert "my-notes.txt" not in sent
    assert "pyiqa/train.yml" in sent and "images/metadata.csv" in sent
    for rel, data in sent.items():
        assert data == (out / rel).read_bytes(), rel


def test_push_refuses_a_corrupted_folder_before_any_request(hub, published: Path) -> None:
    (published / "train.csv").write_text("changed")
    with pytest.raises(StageError, match="not pushed, reshape verify found"):
        push_folder(published, "someone/x")
    assert hub.requests == []


def test_push_without_huggingface_hub_fails_before_any_work(
    pipeline_output: dict[str, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """huggingface_hub is an optional extra: without it, one line naming the extra, and nothing written."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "huggingface_hub" else real_find_spec(name, *a),
    )
    out = pipeline_output["tmp"] / "not-yet"
    args = ["publish", str(out), "--from-run", str(pipeline_output["run"]), "--push-to-hub", "someone/x"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert (
        res.stderr == "reshape: error: --push-to-hub needs huggingface_hub: pip install 'reshape-iqa[hub]'\n"
    )
    assert not out.exists()
