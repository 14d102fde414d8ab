"""Retrieval metrics: ours against torchmetrics' ``RetrievalMAP`` and against the bare similarity product.

Data: N random unit embeddings in identity clusters (``--per-identity`` images each; ``--noise`` sets how
much identities overlap, the default gives mAP ~0.9), leave-one-out retrieval as in SPEC §3.

torchmetrics needs every (query, gallery) pair as three flat tensors (~80 bytes per pair at its peak, in
float64 here), so at N = 20,000 (4e8 pairs) it does not fit in memory: it runs on the first ``n_sub``
images, the largest subset within ``--tm-memory-gb``, and ours runs on that same subset for the measured
speedup; a full-N torchmetrics time is also given, extrapolated as n^2 and labelled so. Its scores are
shifted by +2 (in float64, so no ties are created) because ``retrieval_average_precision`` drops positives
scored <= 0; queries without positives are skipped as in ours.

Printed: ``speedup_vs_torchmetrics`` (measured, on n_sub), ``ratio_to_matmul`` (ours / the bare chunked
Q x G product, same chunk size, minimum over ``--repeats`` alternating runs), ``peak_memory_mb`` (increase
of the process's peak resident memory during our call: VmHWM after resetting it via
/proc/self/clear_refs, minus VmRSS before; ``ru_maxrss`` where that is unavailable).
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import torch
import torch.nn.functional as F

from unlearnkit.metrics.functional import retrieval

BYTES_PER_PAIR = 90  # torchmetrics' measured peak per pair with float64 scores, int64 indexes, bool targets


def make_data(n: int, d: int, per_identity: int, noise: float, seed: int):
    """Unit embeddings: identity centre + isotropic noise (same-identity cosine ~ 1 / (1 + noise^2))."""
    g = torch.Generator().manual_seed(seed)
    n_id = math.ceil(n / per_identity)
    centres = F.normalize(torch.randn(n_id, d, generator=g), dim=1)
    labels = torch.arange(n) // per_identity
    x = centres[labels] + noise * torch.randn(n, d, generator=g) / math.sqrt(d)
    return F.normalize(x, dim=1), labels


def bare_matmul(x: torch.Tensor, chunk: int) -> None:
    for i in range(0, x.shape[0], chunk):
        x[i:i + chunk] @ x.T


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_memory_of(fn):
    """(result, MB of peak resident memory above the resident memory at the start, method)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        before = _status("VmRSS")
        result = fn()
        return result, (_status("VmHWM") - before) / 2**20, "VmHWM-reset"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result = fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return result, (after - before) / 2**20, "ru_maxrss-increase (a lower bound)"


def torchmetrics_map(x: torch.Tensor, labels: torch.Tensor, chunk: int) -> float:
    """Leave-one-out mAP with torchmetrics: every pair except (i, i) goes through ``update``."""
    from torchmetrics.retrieval import RetrievalMAP

    metric = RetrievalMAP(empty_target_action="skip")
    n = x.shape[0]
    for i in range(0, n, chunk):
        q = torch.arange(i, min(i + chunk, n))
        s = (x[q] @ x.T).double() + 2.0
        keep = torch.ones_like(s, dtype=torch.bool)
        keep[q - i, q] = False
        metric.update(s[keep], (labels[q, None] == labels[None, :])[keep], q[:, None].expand_as(s)[keep])
    return float(metric.compute())


def reference_r1(x: torch.Tensor, labels: torch.Tensor, chunk: int) -> float:
    """R@1 by argmax (continuous random data has no ties), over queries with a positive."""
    hits, queries = 0, 0
    n = x.shape[0]
    for i in range(0, n, chunk):
        q = torch.arange(i, min(i + chunk, n))
        s = x[q] @ x.T
        s[q - i, q] = -math.inf
        has = (labels[None, :] == labels[q, None]).sum(1) > 1
        hit = labels[s.argmax(1)] == labels[q]
        hits += int((hit & has).sum())
        queries += int(has.sum())
    return hits / queries


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--per-identity", type=int, default=20)
    p.add_argument("--noise", type=float, default=2.0)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tm-memory-gb", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    x, labels = make_data(a.n, a.d, a.per_identity, a.noise, a.seed)
    print(f"# N={a.n} d={a.d} per_identity={a.per_identity} noise={a.noise} chunk={a.chunk_size} "
          f"threads={torch.get_num_threads()}")

    ours, peak_mb, method = peak_memory_of(lambda: retrieval(x, labels, chunk_size=a.chunk_size))
    t_ours, t_mm = math.inf, math.inf
    for _ in range(a.repeats):  # alternate, so a busy machine slows both alike
        t_mm = min(t_mm, timed(lambda: bare_matmul(x, a.chunk_size))[1])
        t_ours = min(t_ours, timed(lambda: retrieval(x, labels, chunk_size=a.chunk_size))[1])
    print(f"# ours: mAP={ours['mAP']:.6f} R@1={ours['R@1']:.6f} R@5={ours['R@5']:.6f} in {t_ours:.2f} s; "
          f"bare chunked matmul {t_mm:.2f} s")

    n_sub = min(a.n, int(math.sqrt(a.tm_memory_gb * 2**30 / BYTES_PER_PAIR)))
    xs, ls = x[:n_sub], labels[:n_sub]
    sub, t_sub = timed(lambda: retrieval(xs, ls, chunk_size=a.chunk_size))
    tm_map, t_tm = timed(lambda: torchmetrics_map(xs, ls, a.chunk_size))
    r1 = reference_r1(xs, ls, a.chunk_size)
    ok_map, ok_r1 = abs(sub["mAP"] - tm_map) <= 1e-5, abs(sub["R@1"] - r1) <= 1e-9
    print(f"# subset n_sub={n_sub}: ours mAP={sub['mAP']:.8f} in {t_sub:.2f} s, torchmetrics mAP={tm_map:.8f} "
          f"in {t_tm:.2f} s (similarity + update + compute); |diff|={abs(sub['mAP'] - tm_map):.2e} "
          f"{'OK' if ok_map else 'MISMATCH'}; R@1 vs argmax reference {'OK' if ok_r1 else 'MISMATCH'}")
    if n_sub < a.n:
        t_full = t_tm * (a.n / n_sub) ** 2
        print(f"# torchmetrics at N={a.n} does not fit in {a.tm_memory_gb:g} GB; EXTRAPOLATED (x n^2) time "
              f"{t_full:.1f} s -> speedup_vs_torchmetrics_extrapolated_full_n {t_full / t_ours:.1f}")
    print(f"speedup_vs_torchmetrics {t_tm / t_sub:.1f}")
    print(f"ratio_to_matmul {t_ours / t_mm:.2f}")
    print(f"# peak_memory_mb: {method}, during our call at N={a.n} (embeddings alone: "
          f"{x.numel() * 4 / 2**20:.0f} MB)")
    print(f"peak_memory_mb {peak_mb:.0f}")
    if not (ok_map and ok_r1):
        raise SystemExit("ours disagrees with the reference")


if __name__ == "__main__":
    main()
