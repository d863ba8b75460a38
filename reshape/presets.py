"""Official per-target KADID type subsets (the SynDR-IQA / DGQA training code); ``all`` = every type.

Shared by ``reshape distort`` (which types to generate) and ``reshape label`` (which source rows to merge).
"""

from __future__ import annotations

PRESETS: dict[str, tuple[int, ...]] = {
    "livec": (1, 3, 10, 17, 18, 25),
    "koniq": (1, 3, 16, 17, 18, 25),
    "bid": (1, 3, 9, 21, 23, 25),
    "pipal1": (1, 2, 3, 9, 17, 18, 25),
    "pipal2": (1, 2, 3, 9, 17, 23),
    "pipal3": (1, 3, 16, 17, 18, 19, 25),
    "pipal4": (1, 3, 7, 9, 10, 17, 18, 25),
    "pipal5": (1, 2, 3, 4, 9),
    "pipal6": (1, 2, 3, 9, 10, 11, 12, 16, 17, 18, 19, 21, 22, 25),
    "all": tuple(range(1, 26)),
}
