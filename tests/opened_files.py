"""Every file a block of test code opens, counted by Python's audit hook (``open`` events).

Audit hooks cannot be removed, so one hook is installed per process and records only inside the block.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator

_opened: list[str] | None = None


def _count_opens(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


@functools.cache
def _install() -> None:
    sys.addaudithook(_count_opens)


@contextlib.contextmanager
def opened_files() -> Iterator[list[str]]:
    """The paths opened (for reading or writing) while the block runs, in order."""
    global _opened
    _install()
    seen: list[str] = []
    _opened = seen
    try:
        yield seen
    finally:
        _opened = None
