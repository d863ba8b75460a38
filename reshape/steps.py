"""One line on stderr before each step that can take more than a few seconds.

Stages announce their long steps here; the command line shows them (hidden by ``-q``), while a notebook
that configured no logging sees nothing (Python's last-resort handler prints warnings only).
"""

from __future__ import annotations

import logging

STEP_LOGGER = "reshape.step"


def announce(message: str, *args: object) -> None:
    """Tell the user what is about to take a while (``%``-style arguments, as for logging)."""
    logging.getLogger(STEP_LOGGER).info(message, *args)
