"""Reading a command's stderr in tests: the step announcements apart from warnings and errors, and the
error contract (one line, exit 2, no traceback)."""

from __future__ import annotations

import re

_NOT_A_STEP = re.compile(r"^reshape: (error|ERROR|WARNING|INFO|DEBUG):")


def without_steps(stderr: str) -> str:
    """stderr less the "reshape: <what is about to take a while>" lines of reshape.steps."""
    kept = [
        line for line in stderr.splitlines(keepends=True)
        if not line.startswith("reshape: ") or _NOT_A_STEP.match(line)
    ]  # fmt: skip
    return "".join(kept)


def one_line_error(res, code: int = 2) -> str:
    """The error contract of a click ``Result``: exit ``code``, no traceback, exactly one non-blank line
    on stderr and it is reshape's error line; returns that line."""
    assert res.exit_code == code, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("reshape: error: "), res.stderr
    return lines[0]
