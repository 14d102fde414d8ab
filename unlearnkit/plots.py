"""Plots of a run (the evaluation callback's) and of a comparison (the report's, the study's), written as PNG
without pyplot (no display or backend needed).

``matplotlib.figure.Figure`` renders with the Agg canvas on ``savefig``, so these work headless and never touch
the user's interactive backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unlearnkit.metrics import functional as MF
from unlearnkit.protocols import query_groups
from unlearnkit.utils.io import atomic_open

ROLE_TITLES = {"before": "original θ0", "after": "after unlearning", "oracle": "retrain oracle"}
FORGET_COLOR, RETAIN_COLOR = "#d62728", "#7f7f7f"


def _figure(panels: int, width: float = 4.2, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, axes


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return path


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the rows of ``x``."""
    if len(x) < 2:
        return np.zeros((len(x), 2))
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _subsample(mask: torch.Tensor, limit: int, seed: int = 0) -> torch.Tensor:
    idx = mask.nonzero().squeeze(1).numpy()
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    return torch.from_numpy(idx)


def save_projection(evs: dict, path: str | Path, limit: int = 2000):
    """PCA of forget vs retain images (train and held-out), one panel per model (θ0, unlearned, oracle).

    Each panel has its own PCA: the models' embedding spaces are not aligned, only their structure compares.
    """
    fig, axes = _figure(len(evs))
    for ax, (role, ev) in zip(axes, evs.items()):
        z = ev.retrieval["embeddings"].cpu().float()
        forget = _subsample(ev.group("forget_train", "forget_test"), limit)
        retain = _subsample(ev.group("retain_train", "retain_test"), limit, seed=1)
        xy = pca_2d(z[torch.cat([retain, forget])].numpy())
        ax.scatter(xy[:len(retain), 0], xy[:len(retain), 1], s=6, c=RETAIN_COLOR, alpha=0.5, label="retain")
        ax.scatter(xy[len(retain):, 0], xy[len(retain):, 1], s=8, c=FORGET_COLOR, alpha=0.8, label="forget")
        ax.set_title(ROLE_TITLES.get(role, role))
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def save_cs_histograms(evs: dict, protocol: str, path: str | Path):
    """Per-identity compactness (mean pairwise cosine) of the forget and retain query sets, each model overlaid."""
    groups = query_groups(protocol)
    values = {(part, role): list(MF.compactness_per_identity(ev.retrieval["embeddings"][ev.group(group)].cpu(),
                                                             ev.retrieval["labels"][ev.group(group)].cpu()).values())
              for part, group in groups.items() for role, ev in evs.items()}
    every = [v for vs in values.values() for v in vs]
    low, high = (min(every), max(every)) if every else (-1.0, 1.0)
    pad = max(0.02, 0.05 * (high - low))  # bins over the values' range: trained models crowd near 1
    bins = np.linspace(max(-1.0, low - pad), min(1.0, high + pad), 31)
    fig, axes = _figure(2)
    for ax, (part, group) in zip(axes, groups.items()):
        for role in evs:
            cs = values[part, role]
            if cs:
                ax.hist(cs, bins=bins, alpha=0.5, label=f"{ROLE_TITLES.get(role, role)} (CS {np.mean(cs):.3f})")
        ax.set_title(f"{part} identities ({group})")
        ax.set_xlabel("per-identity CS (mean pairwise cosine)")
        ax.set_ylabel("identities")
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


# how θ0 and the retrain oracle are marked on every forget-vs-retain plot
REFERENCE_STYLE = {"original": dict(marker="s", c="black", s=60), "oracle": dict(marker="*", c="#2ca02c", s=160)}


def save_tradeoff(points: list[dict], path: str | Path):
    """Forget mAP (x) vs retain mAP (y), one panel per protocol; ``points``: {panel, label, kind, forget, retain}
    and, for means over seeds, optional ``forget_std`` / ``retain_std`` drawn as error bars.

    ``kind`` is ``method``, ``original`` or ``oracle``; the ideal corner is top-left (forgotten, retained).
    """
    panels = sorted({p["panel"] for p in points}) or [""]
    fig, axes = _figure(len(panels), width=5.0, height=4.5)
    style = {"method": dict(marker="o", c="#1f77b4", s=30), **REFERENCE_STYLE}
    for ax, panel in zip(axes, panels):
        for kind in ("method", "original", "oracle"):
            mine = [p for p in points if p["panel"] == panel and p["kind"] == kind]
            if not mine:
                continue
            ax.scatter([p["forget"] for p in mine], [p["retain"] for p in mine], label=kind, **style[kind])
            if any("forget_std" in p for p in mine):
                ax.errorbar([p["forget"] for p in mine], [p["retain"] for p in mine], fmt="none", capsize=3,
                            ecolor=style[kind]["c"], xerr=[p.get("forget_std", 0) for p in mine],
                            yerr=[p.get("retain_std", 0) for p in mine])
            for p in mine:
                ax.annotate(p["label"], (p["forget"], p["retain"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        _forget_retain_axes(ax, panel, "trade-off", fontsize=8)
    return save_figure(fig, path)


def save_fronts(curves: list[dict], references: list[dict], path: str | Path):
    """Trade-off fronts: forget mAP (x) vs retain mAP (y), one panel per protocol, one line per method through the
    mean over seeds of each of its settings (in knob order), with a band of ± one standard deviation of retain mAP
    and error bars of forget mAP over the seeds.

    ``curves``: {panel, label, forget, retain}, ``forget`` / ``retain`` one row per seed, one column per setting;
    ``references``: {panel, label, kind (``original`` or ``oracle``), forget, retain}, one value per seed, drawn
    at their mean."""
    panels = list(dict.fromkeys(c["panel"] for c in [*curves, *references])) or [""]  # in the order given
    fig, axes = _figure(len(panels), width=5.0, height=4.5)
    colours = {label: f"C{k % 10}" for k, label in enumerate(dict.fromkeys(c["label"] for c in curves))}
    for ax, panel in zip(axes, panels):
        for curve in (c for c in curves if c["panel"] == panel):
            forget, retain = np.asarray(curve["forget"], dtype=float), np.asarray(curve["retain"], dtype=float)
            fx, fy = np.nanmean(forget, axis=0), np.nanmean(retain, axis=0)
            sx, sy = np.nanstd(forget, axis=0), np.nanstd(retain, axis=0)
            colour = colours[curve["label"]]
            ax.errorbar(fx, fy, xerr=sx, fmt="o-", ms=3, lw=1, capsize=2, c=colour, label=curve["label"])
            order = np.argsort(fx)
            ax.fill_between(fx[order], (fy - sy)[order], (fy + sy)[order], color=colour, alpha=0.15, lw=0)
        for ref in (r for r in references if r["panel"] == panel):
            ax.scatter([np.nanmean(ref["forget"])], [np.nanmean(ref["retain"])], label=ref["label"],
                       zorder=3, **REFERENCE_STYLE[ref["kind"]])
        _forget_retain_axes(ax, panel, "trade-off fronts", fontsize=7)
    return save_figure(fig, path)


def _forget_retain_axes(ax, panel: str, untitled: str, fontsize: int) -> None:
    """Title, labels, grid and legend of a forget-vs-retain panel (the trade-off plot and the fronts)."""
    ax.set_title(f"protocol: {panel}" if panel else untitled)
    ax.set_xlabel("forget mAP (lower = more forgotten)")
    ax.set_ylabel("retain mAP (higher = more kept)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=fontsize)
