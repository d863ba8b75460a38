"""Push a published dataset folder to the Hugging Face Hub as a dataset repository.

Only what publish recorded goes up: every file listed in SHA256SUMS and SHA256SUMS itself, after
``reshape verify`` found them intact. Files a user added to the folder and the ``source/`` mount stay local
(verify lists such files; they do not block the push, every other problem does).
The token is huggingface_hub's usual one (``hf auth login`` or ``$HF_TOKEN``); ``$HF_ENDPOINT`` (read when
pushing) points at another Hub. All files go up in one commit on ``revision`` (a branch, created if missing).
Files an earlier push put on the Hub that this dataset no longer has are left there.
"""

from __future__ import annotations

import os
from pathlib import Path

from reshape.errors import BadInputError, StageError
from reshape.layout import SUMS, parse_sha256sums


def _files_to_push(folder: Path) -> list[str]:
    from reshape.verify import verify_dataset

    report = verify_dataset(folder)
    # Files the user added are not pushed, so they do not block the push; every other problem does.
    blocking = [p for p in report.problems if not p.endswith(f": file not listed in {SUMS}")]
    if blocking:
        raise StageError(
            f"{folder}: not pushed, reshape verify found {len(blocking)} problem(s), the first: {blocking[0]}"
        )
    listed = parse_sha256sums((folder / SUMS).read_text("utf-8"), SUMS, report)
    return sorted(listed) + [SUMS]


def require_hub() -> None:
    """Fail before any work, in one line, when the optional huggingface_hub is not installed."""
    import importlib.util

    if importlib.util.find_spec("huggingface_hub") is None:
        raise BadInputError("--push-to-hub needs huggingface_hub: pip install 'reshape-iqa[hub]'")


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Verify ``folder`` and upload its files to the dataset repository ``repo_id``; returns the commit URL."""
    require_hub()
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise BadInputError(f"--push-to-hub {repo_id!r}: expected OWNER/NAME")
    files = _files_to_push(folder)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel in files
        ]
        info = api.create_commit(
            repo_id,
            operations=operations,
            repo_type="dataset",
            revision=revision,
            commit_message=f"reshape publish: {folder.name} ({len(files)} files)",
        )
    except HfHubHTTPError as exc:
        raise StageError(f"{repo_id}: Hub upload failed ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise StageError(f"{repo_id}: cannot reach the Hub at {api.endpoint} ({exc})") from None
    return str(info.commit_url)
