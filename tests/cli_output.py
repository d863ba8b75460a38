"""Reading a command's stderr in tests: the step announcements apart from warnings and errors."""

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
