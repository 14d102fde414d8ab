"""``unlearnkit report RUN_DIR [RUN_DIR ...] [--out DIR]``: one comparison of finished runs.

Reads each run's ``metrics.json`` (and ``evaluation.json`` for the protocol and UES settings) and writes
``report.md`` (a table per forget protocol), ``report.csv`` (every metric of every run) and ``tradeoff.png``
(forget mAP vs retain mAP, the original and the oracle marked). Each run's cost is given relative to the
retrain oracle of the same protocol, the run whose model is ``Retrain``. Each protocol's table marks ★ the metrics
its verdicts rest on, and each unlearning run is followed by its noise baseline (θ0 plus noise of its drift).
Unlearning runs that left θ0 unchanged or collapsed the embedding (``unlearnkit.status``) are marked ⚠ and listed
with what to change. Where a privacy audit exists (``--audit DIR``, or an ``audit.json`` in a run's directory or up to
three levels above it, as for the runs ``unlearnkit audit`` trains), its table follows.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from unlearnkit.errors import DataError
from unlearnkit.protocols import is_headline
from unlearnkit.status import run_status
from unlearnkit.utils.io import atomic_open, write_text

RETRAIN, PRETRAIN = "Retrain", "Pretrain"
KIND_OF_MODEL = {RETRAIN: "oracle", PRETRAIN: "original"}
# (metric key, column title) of the Markdown tables; ↓ / ↑ say which way is better
HEADLINE = [
    ("forget/mAP", "forget mAP ↓"), ("forget/R@1", "forget R@1 ↓"), ("forget/CS", "forget CS ↓"),
    ("retain/mAP", "retain mAP ↑"), ("retain/R@1", "retain R@1 ↑"), ("retain/CS", "retain CS"),
    ("UES", "UES ↑"), ("mia/membership_recall", "MIA recall ↓"), ("mia/attack_acc", "attack acc"),
    ("oracle_gap/forget/mAP", "Δ oracle, forget mAP ↓"), ("oracle_gap/retain/mAP", "Δ oracle, retain mAP ↓"),
    ("mia/attack_fpr", "attack FPR"), ("mia/forget_auc", "MIA forget AUC"), ("drift", "drift from θ0"),
    ("retain_heldout/mAP", "held-out retain mAP ↑"), ("memorisation/mAP", "memorisation gap"),
    ("oracle_gap/retain_heldout/mAP", "Δ oracle, held-out retain mAP ↓"),
    ("oracle_gap/memorisation/mAP", "Δ oracle, memorisation ↓"), ("oracle_gap/mia/forget_auc", "Δ oracle, MIA AUC ↓"),
]
NOISE = "noise/"
COST_COLUMNS = [("cost_vs_retrain/wall_seconds", "time ×retrain"), ("cost_vs_retrain/images", "images ×retrain")]


@dataclass
class Run:
    """One finished run directory: its model's class name, final metrics, evaluation settings and, for an
    unlearning run, its status (``unlearnkit.status``: ok, unchanged or collapsed, the rule and the advice)."""

    path: Path
    model: str
    metrics: dict[str, float]
    settings: dict = field(default_factory=dict)
    status: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def protocol(self) -> str:
        return self.settings.get("protocol") or "?"


def load_run(path: str | Path) -> Run:
    path = Path(path)
    summary = path / "metrics.json"
    if not summary.is_file():
        raise DataError(f"{path} has no metrics.json: give the directory of a finished run")
    try:
        data = json.loads(summary.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{summary} is not valid JSON ({err})") from err
    evaluation = path / "evaluation.json"
    settings = json.loads(evaluation.read_text()).get("settings", {}) if evaluation.is_file() else {}
    metrics = data.get("metrics", {})
    # runs finished before metrics.json had a status get one from their metrics
    return Run(path, data.get("model", "?"), metrics, settings, data.get("status") or run_status(metrics))


def _images(metrics: dict) -> float | None:
    """Images through any network (student and teacher forward passes)."""
    keys = ("cost/forward_images", "cost/teacher_forward_images")
    if not any(k in metrics for k in keys):
        return None
    return sum(metrics.get(k, 0.0) for k in keys)


def cost_vs_retrain(run: Run, retrain: Run | None) -> dict[str, float]:
    """``cost_vs_retrain/<x>`` = the run's cost ``x`` divided by the retrain run's (every ``cost/…`` entry)."""
    if retrain is None:
        return {}
    mine = {k[5:]: v for k, v in run.metrics.items() if k.startswith("cost/")}
    theirs = {k[5:]: v for k, v in retrain.metrics.items() if k.startswith("cost/")}
    mine["images"], theirs["images"] = _images(run.metrics), _images(retrain.metrics)
    return {f"cost_vs_retrain/{k}": v / theirs[k] for k, v in mine.items()
            if v is not None and theirs.get(k)}


def retrain_for(run: Run, runs: list[Run]) -> Run | None:
    """The retrain run of the same protocol, else any retrain run."""
    retrains = [r for r in runs if r.model == RETRAIN]
    same = [r for r in retrains if r.protocol == run.protocol]
    return (same or retrains or [None])[0]


def reference_rows(runs: list[Run], protocol: str) -> list[dict]:
    """Rows of θ0 and of the oracle from the runs' ``original/…`` and ``oracle/…`` values, where no Pretrain or
    Retrain run of the protocol stands for them."""
    mine = [r for r in runs if r.protocol == protocol]
    rows = []
    for prefix, label, kind in (("original/", "original θ0", "original"), ("oracle/", "oracle θ*", "oracle")):
        if any(KIND_OF_MODEL.get(r.model) == kind for r in mine):
            continue
        source = next((r for r in mine if f"{prefix}forget/mAP" in r.metrics), None)
        if source is not None:
            values = {k[len(prefix):]: v for k, v in source.metrics.items() if k.startswith(prefix)}
            rows.append({"run": label, "model": "", "protocol": protocol, "kind": kind, **values})
    return rows


def report_rows(runs: list[Run]) -> list[dict]:
    """One row per run plus the reference rows, grouped by protocol; ``kind``: method, original or oracle."""
    rows = []
    for protocol in dict.fromkeys(r.protocol for r in runs):
        rows += reference_rows(runs, protocol)
        for run in (r for r in runs if r.protocol == protocol):
            kind = KIND_OF_MODEL.get(run.model, "method")
            status = {"status": run.status["verdict"]} if run.status else {}
            rows.append({"run": run.name, "model": run.model, "protocol": protocol, "kind": kind, **status,
                         **run.metrics, **cost_vs_retrain(run, retrain_for(run, runs))})
            noise = {k[len(NOISE):]: v for k, v in run.metrics.items() if k.startswith(NOISE)}
            if noise and kind == "method":  # θ0 + isotropic noise of this run's drift: what noise reaches
                rows.append({"run": f"↳ noise at {run.name}'s drift", "model": "", "protocol": protocol,
                             "kind": "noise", **noise})
    return rows


def _fmt(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.3f}" if math.isfinite(value) else "–"
    return str(value) if value not in (None, "") else "–"


def _settings_line(runs: list[Run]) -> str:
    seen = sorted({(r.settings.get("ues_metric", "mAP"), r.settings.get("ues_reference", "original"))
                   for r in runs if r.settings})
    if not seen:
        return "UES settings: not recorded (no evaluation.json)."
    return "UES: " + "; ".join(f"P = {p}, F measured against the {ref}" for p, ref in seen) + "."


def find_audits(run_dirs, audits=()) -> dict[Path, dict]:
    """The privacy audits to show, by ``audit.json`` path: those given (a directory or the file) and those found in
    a run's directory or up to three levels above it (``<audit>/runs/<method>/seed-<s>``)."""
    paths = [Path(a) / "audit.json" if Path(a).is_dir() else Path(a) for a in audits]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]} not found: give an audit directory (unlearnkit audit --out) for --audit")
    for run_dir in map(Path, run_dirs):
        paths += [d / "audit.json" for d in (run_dir, *run_dir.resolve().parents[:3]) if (d / "audit.json").is_file()]
    return {p.resolve(): json.loads(p.read_text()) for p in paths}


def audit_lines(audits: dict[Path, dict]) -> list[str]:
    """Each audit's table (``unlearnkit.metrics.audit.table_markdown``) with the ε range its N resolves."""
    from unlearnkit.metrics.audit import table_markdown

    lines = []
    for path, result in audits.items():
        n = result["models"]
        lines += [f"## Privacy audit ({result['protocol']} protocol): {path.parent}", "",
                  f"{n} runs per method against {n} retrained oracles; resolvable ε 0–{result['resolvable_epsilon']:.0f}"
                  " (higher ε all look alike). F and final score ↑ (an unlearning as good as retraining scores what N"
                  " allows for identical distributions, not 1); U-LiRA AUC 0.5 = indistinguishable from retraining"
                  " (docs/audit.md).", "", *table_markdown(result), ""]
    return lines


def markdown(runs: list[Run], rows: list[dict], audits: dict[Path, dict] | None = None) -> str:
    lines = ["# Unlearning report", "",
             f"{len(runs)} run(s): {', '.join(r.name for r in runs)}.", "",
             _settings_line(runs),
             "Cost ×retrain: the run's wall time, and images through a network (student and teacher forward"
             " passes), divided by the Retrain run's of the same protocol.",
             "★: the metrics the protocol's verdicts rest on (docs/metrics.md). ↳ noise rows: θ0's embeddings plus"
             " isotropic noise of the run's drift; a figure this noise reaches says nothing about the method.", ""]
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        mine = [r for r in rows if r["protocol"] == protocol]
        verify = sorted({k for r in mine for k in r if k.startswith("verify/") and k.endswith("/acc")})
        columns = [(key, f"★ {title}" if is_headline(key, protocol) else title)
                   for key, title in HEADLINE + [(k, f"{k[7:-4]} acc ↑") for k in verify] + COST_COLUMNS
                   if any(key in r for r in mine)]
        lines += [f"## Protocol: {protocol}", "",
                  "| run | model | " + " | ".join(title for _, title in columns) + " |",
                  "|---|---|" + "---:|" * len(columns)]
        for row in (r for r in rows if r["protocol"] == protocol):
            name = f"**{row['run']}**" if row["kind"] not in ("method", "noise") else row["run"]
            if row.get("status", "ok") != "ok":
                name += f" ⚠ {row['status']}"
            lines.append(f"| {name} | {row['model'] or '–'} | "
                         + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |")
        lines.append("")
    lines += audit_lines(audits or {})
    lines += flagged_runs(runs)
    lines += ["![forget mAP vs retain mAP](tradeoff.png)", ""]
    return "\n".join(lines)


def flagged_runs(runs: list[Run]) -> list[str]:
    """The runs marked ⚠ in the tables, each with the rule that flagged it and what to change."""
    flagged = [r for r in runs if r.status and r.status["verdict"] != "ok"]
    if not flagged:
        return []
    lines = ["## ⚠ Runs to redo", "",
             "Their figures do not show unlearning: the run left θ0 unchanged, or collapsed the embedding.", ""]
    for run in flagged:
        status = run.status
        lines.append(f"- {run.name} ({run.model}): **{status['verdict']}**, {status['rule']}. "
                     f"{status['advice'][:1].upper()}{status['advice'][1:]}.")
    return [*lines, ""]


def write_csv(path: Path, rows: list[dict]) -> None:
    first = ["run", "model", "protocol", "kind", "status"]
    rest = sorted({k for r in rows for k in r} - set(first))
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=first + rest, restval="")
        writer.writeheader()
        writer.writerows(rows)


def tradeoff_points(rows: list[dict]) -> list[dict]:
    return [{"panel": r["protocol"], "label": r["model"] or r["run"], "kind": r["kind"],
             "forget": r["forget/mAP"], "retain": r["retain/mAP"]}
            for r in rows if math.isfinite(r.get("forget/mAP", math.nan))
            and math.isfinite(r.get("retain/mAP", math.nan))]


def write_report(run_dirs, out: str | Path = "report", audits=()) -> Path:
    """Write ``report.md``, ``report.csv`` and ``tradeoff.png`` under ``out``; returns the path of report.md.
    ``audits``: privacy audit directories to show beside the runs (``find_audits``)."""
    from unlearnkit.plots import save_tradeoff

    if not run_dirs:
        raise DataError("give at least one run directory to report on")
    runs = [load_run(d) for d in run_dirs]
    rows = report_rows(runs)
    found = find_audits(run_dirs, audits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "report.csv", rows)
    save_tradeoff(tradeoff_points(rows), out / "tradeoff.png")
    write_text(out / "report.md", markdown(runs, rows, found))
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unlearnkit report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    parser.add_argument("--out", default="report", help="output directory (default: ./report)")
    parser.add_argument("--audit", nargs="+", default=[], metavar="AUDIT_DIR",
                        help="privacy audits (unlearnkit audit --out) to show; found by itself above the runs it trained")
    args = parser.parse_args(argv)
    path = write_report(args.runs, args.out, args.audit)
    print(f"report: {path} (+ report.csv, tradeoff.png)")
    flagged = [run for run in map(load_run, args.runs) if run.status and run.status["verdict"] != "ok"]
    if flagged:
        print(f"⚠ {len(flagged)} run(s) flagged: " + ", ".join(f"{r.name} {r.status['verdict']}" for r in flagged)
              + f" (see '⚠ Runs to redo' in {path})")
    return 0
