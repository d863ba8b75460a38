"""DRCDown at scale: time and peak memory of `reshape.prune` against a dense N x N reference.

Every case runs in its own subprocess so peak RSS is per case. Cases (full size; ``--quick`` shrinks them):

* dense reference vs. ours (exact) at 10,000 x 2,048-d, ratio printed;
* exact 100,000 x 2,048-d (targets: <= 180 s, <= 4 GB peak RSS);
* approximate 1,000,000 x 512-d (target <= 300 s);
* link recall of the approximate mode against the exact one at 100,000 x 512-d (target >= 99 %);
* "all pairs similar" (issue #16): 12,000 x 512-d where nearly every pair links (~70 M links; targets
  <= 60 s, <= 1.5 GB peak RSS), with the pre-streaming path (all links in memory, then a sparse graph) as
  the baseline at 4,000 rows in the same run, and ours at 4,000 for the like-for-like ratio;
* 100,000 x 2,048-d at ~1 % link density (~50 M links; within the 4 GB of the exact case), baseline: the
  pre-streaming path at 20,000 rows and the same density.

Data: synthetic clusters whose members have pairwise cosine around the 0.9 threshold (so clusters are only
partly linked, as real training-set features are), labels spread within a cluster, and 30 % loners.

    python benchmarks/prune_scale.py            # full size (CPU heavy: ~10-15 min on 2 cores)
    python benchmarks/prune_scale.py --quick    # small sizes, a minute
    python benchmarks/prune_scale.py --skip dense,exact,approx,recall   # only the issue #16 cases
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time

import numpy as np

SIM, LAB, MIN_CLUSTER = 0.9, 1.0, 20


def make_data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 features in clusters of ~2-200 members around the link threshold, plus loners."""
    rng = np.random.default_rng(seed)
    features = np.empty((n, dim), dtype=np.float32)
    labels = np.empty(n, dtype=np.float64)
    clustered = int(n * 0.7)
    # rows are scattered to random positions as they are made, so no shuffled copy of the matrix is needed
    slot = rng.permutation(n)
    pos = 0
    while pos < clustered:
        size = min(int(rng.lognormal(3.0, 1.0)) + 2, clustered - pos, 400)
        centre = rng.standard_normal(dim).astype(np.float32)
        centre /= np.linalg.norm(centre)
        spread = rng.uniform(0.25, 0.4)  # pairwise cosine ~ 1 / (1 + spread^2): 0.86 .. 0.94
        noise = rng.standard_normal((size, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        features[slot[pos : pos + size]] = centre + noise
        labels[slot[pos : pos + size]] = rng.uniform(0.5, 9.5) + rng.normal(0, 0.5, size)
        pos += size
    for start in range(clustered, n, 65536):
        stop = min(start + 65536, n)
        features[slot[start:stop]] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    labels[slot[clustered:]] = rng.uniform(0, 10, n - clustered)
    return features, np.clip(labels, 0, 10)


def make_linked(n: int, dim: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``clusters`` equal groups whose members all link (cosine ~0.95, labels within 1.1): with one group
    nearly all pairs are similar; with 100 groups ~1 % of all pairs link."""
    rng = np.random.default_rng(seed)
    features = np.empty((n, dim), dtype=np.float32)
    labels = np.empty(n, dtype=np.float64)
    group = rng.permutation(n) % clusters
    for g in range(clusters):
        rows = np.flatnonzero(group == g)
        centre = rng.standard_normal(dim).astype(np.float32)
        centre /= np.linalg.norm(centre)
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32) * np.float32(0.22 / np.sqrt(dim))
        features[rows] = centre + noise
        labels[rows] = rng.uniform(1, 8) + rng.uniform(0, 1.1, len(rows))  # ~97 % of member pairs link
    return features, labels


def legacy_kept(features: np.ndarray, labels: np.ndarray, seed: int = 0, block: int = 2048) -> np.ndarray:
    """The pre-streaming path (before issue #16): every link collected in memory, then a sparse graph."""
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from reshape.prune import Clusters, keep_mask, unit_rows

    unit = unit_rows(features)
    n, dim = unit.shape
    firsts, seconds = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        result = faiss.RangeSearchResult(stop - start)
        faiss.range_search_inner_product(
            faiss.swig_ptr(unit[start:stop]), faiss.swig_ptr(unit[start:]), dim, stop - start, n - start,
            SIM, result,
        )  # fmt: skip
        lims = faiss.rev_swig_ptr(result.lims, stop - start + 1).astype(np.int64)
        cols = faiss.rev_swig_ptr(result.labels, int(lims[-1])).copy().astype(np.int64) + start
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims))
        firsts.append(rows[cols > rows])
        seconds.append(cols[cols > rows])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    close = np.abs(labels[first] - labels[second]) < LAB
    first, second = first[close], second[close]
    order = np.lexsort((second, first))
    links = np.stack([first[order], second[order]], axis=1)
    graph = coo_matrix((np.ones(len(links), np.int8), (links[:, 0], links[:, 1])), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    linked = np.zeros(n, dtype=bool)
    linked[links.ravel()] = True
    cluster_id = np.full(n, -1, dtype=np.int64)
    _, cluster_id[linked] = np.unique(component[linked], return_inverse=True)
    sizes = np.bincount(cluster_id[linked]).astype(np.int64)
    return keep_mask(Clusters(cluster_id, sizes, len(links)), min_cluster=MIN_CLUSTER, seed=seed)


def dense_drcdown(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The straightforward version: full N x N similarity and label-difference matrices."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    linked = (unit @ unit.T > SIM) & (np.abs(labels[:, None] - labels[None, :]) < LAB)
    np.fill_diagonal(linked, False)
    _, comp = connected_components(csr_matrix(linked), directed=False)
    has_link = linked.any(axis=1)
    keys = np.random.default_rng(seed).random(len(labels))
    kept = ~has_link
    for c in np.unique(comp[has_link]):
        members = np.flatnonzero((comp == c) & has_link)
        quota = max(MIN_CLUSTER, len(members) // 2) if len(members) > MIN_CLUSTER else len(members)
        kept[members[np.argsort(keys[members])[:quota]]] = True
    return np.flatnonzero(kept)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_case(case: str, n: int, dim: int, backend: str) -> dict:
    from reshape.prune import find_clusters, iter_links, keep_mask

    if case.startswith(("similar", "density")):
        features, labels = make_linked(n, dim, 1 if case.startswith("similar") else 100)
    else:
        features, labels = make_data(n, dim)
    out: dict = {
        "case": case,
        "n": n,
        "dim": dim,
        "data_gb": features.nbytes / 1024**3,
        "rss_data_gb": peak_rss_gb(),
    }
    t0 = time.perf_counter()
    if case == "dense":
        kept = dense_drcdown(features, labels)
        out.update(kept=len(kept))
    elif case.endswith("-old"):
        kept = legacy_kept(features, labels)
        out.update(
            kept=int(kept.sum()), kept_hash=hashlib.sha256(np.flatnonzero(kept).tobytes()).hexdigest()[:12]
        )
    elif case == "recall":
        exact = find_clusters(features, labels, backend=backend)
        out["exact_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        approx = find_clusters(features, labels, approximate=True)
        out["approx_s"] = time.perf_counter() - t1

        def codes(approximate: bool) -> np.ndarray:
            chunks = iter_links(features, labels, backend=backend, approximate=approximate)
            return np.sort(np.concatenate([a * n + b for a, b in chunks] or [np.empty(0, np.int64)]))

        codes_exact, codes_approx = codes(False), codes(True)
        found = np.isin(codes_exact, codes_approx).sum()
        out.update(
            links=len(codes_exact),
            recall=float(found / max(len(codes_exact), 1)),
            false_links=int(len(np.setdiff1d(codes_approx, codes_exact))),
            same_clusters=bool(np.array_equal(exact.cluster_id, approx.cluster_id)),
        )
    else:
        clusters = find_clusters(features, labels, approximate=case == "approximate", backend=backend)
        kept = keep_mask(clusters, min_cluster=MIN_CLUSTER)
        out.update(
            kept=int(kept.sum()), kept_hash=hashlib.sha256(np.flatnonzero(kept).tobytes()).hexdigest()[:12],
            links=clusters.n_links, clusters=clusters.n_clusters,
            largest=int(clusters.sizes.max()) if clusters.n_clusters else 0,
        )  # fmt: skip
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def spawn(case: str, n: int, dim: int, backend: str = "auto", label: str = "") -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--dim", str(dim), "--backend", backend]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    name = f"{case}/{label}" if label else case
    if proc.returncode != 0:
        return {"case": name, "n": n, "dim": dim, "error": proc.stderr.strip().splitlines()[-1:]}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "case": name}


def show(result: dict) -> None:
    if "error" in result:
        print(
            f"  {result['case']:<12} {result['n']:>9,} x {result['dim']:<5} FAILED: {result['error']}",
            flush=True,
        )
        return
    extra = {
        k: v for k, v in result.items() if k not in {"case", "n", "dim", "seconds", "peak_rss_gb", "data_gb"}
    }
    print(
        f"  {result['case']:<12} {result['n']:>9,} x {result['dim']:<5} {result['seconds']:8.1f} s  "
        f"peak RSS {result['peak_rss_gb']:5.2f} GB (data {result['data_gb']:.2f} GB)  "
        + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="auto", help="exact search backend: auto, faiss or bf16")
    parser.add_argument(
        "--skip", default="", help="comma list of sections to skip: dense,exact,approx,recall,similar,density"
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.n, args.dim, args.backend)))
        return

    dense_n, exact_n, approx_n, recall_n = (
        (2000, 10000, 50000, 10000) if args.quick else (10000, 100000, 1000000, 100000)
    )
    skip = set(filter(None, args.skip.split(",")))
    print(f"DRCDown scale benchmark (sim > {SIM}, |dlabel| < {LAB}, min cluster {MIN_CLUSTER})", flush=True)
    if "dense" not in skip:
        print(f"dense N x N reference vs. ours at {dense_n:,} x 2048:", flush=True)
        dense = spawn("dense", dense_n, 2048)
        show(dense)
        for backend in ("faiss", "bf16"):
            ours = spawn("exact", dense_n, 2048, backend)
            ours["case"] = f"exact/{backend}"
            show(ours)
            if "error" not in dense and "error" not in ours:
                print(
                    f"    ratio dense/ours: time {dense['seconds'] / ours['seconds']:.1f}x, "
                    f"peak RSS {dense['peak_rss_gb'] / ours['peak_rss_gb']:.1f}x, same kept count: "
                    f"{dense['kept'] == ours['kept']}",
                    flush=True,
                )
    if "exact" not in skip:
        print(f"exact {exact_n:,} x 2048 (targets <= 180 s, <= 4 GB):", flush=True)
        for backend in args.backend.split(",") if args.backend != "auto" else ("bf16", "faiss"):
            result = spawn("exact", exact_n, 2048, backend)
            result["case"] = f"exact/{backend}"
            show(result)
    if "approx" not in skip:
        print(f"approximate {approx_n:,} x 512 (target <= 300 s):", flush=True)
        show(spawn("approximate", approx_n, 512))
    if "recall" not in skip:
        print(f"approximate-mode link recall at {recall_n:,} x 512 (target >= 99 %):", flush=True)
        show(spawn("recall", recall_n, 512))
    backends = args.backend.split(",") if args.backend != "auto" else ("bf16", "faiss")
    if "similar" not in skip:
        base_n, full_n = (2000, 6000) if args.quick else (4000, 12000)
        print(f"all pairs similar, {full_n:,} x 512 (targets <= 60 s, <= 1.5 GB peak RSS):", flush=True)
        compare(spawn("similar-old", base_n, 512), [spawn("similar", base_n, 512, b, b) for b in backends])
        for backend in backends:
            result = spawn("similar", full_n, 512, backend)
            result["case"] = f"similar/{backend}"
            show(result)
    if "density" not in skip:
        base_n, full_n = (5000, 20000) if args.quick else (20000, 100000)
        print(f"~1 % link density, {full_n:,} x 2048 (within <= 4 GB):", flush=True)
        compare(spawn("density-old", base_n, 2048), [spawn("density", base_n, 2048, b, b) for b in backends])
        for backend in backends:
            result = spawn("density", full_n, 2048, backend)
            result["case"] = f"density/{backend}"
            show(result)


def compare(old: dict, ours_list: list[dict]) -> None:
    """Baseline (pre-streaming path) against ours on the same data, in the same run."""
    show(old)
    for ours in ours_list:
        show(ours)
        if "error" in old or "error" in ours:
            continue
        print(
            f"    ratio old/ours at {old['n']:,}: time {old['seconds'] / ours['seconds']:.2f}x, peak RSS "
            f"{old['peak_rss_gb'] / ours['peak_rss_gb']:.2f}x, RSS above data "
            f"{(old['peak_rss_gb'] - old['rss_data_gb']) / max(ours['peak_rss_gb'] - ours['rss_data_gb'], 1e-3):.1f}x"
            f", same kept set: {old['kept_hash'] == ours['kept_hash']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
