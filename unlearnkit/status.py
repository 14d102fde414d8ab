"""Did an unlearning run do anything, or did it destroy the model? One verdict per run, with the rule behind it.

A run that leaves θ0 as it was and a run that collapses the embedding both give numbers that look like any other
run's (a collapsed model can even score a middling UES), so every finished unlearning run gets a ``status``:

- ``collapsed``: retain CS ≥ 0.99 (every retained person's images embed to nearly one point) while retain mAP fell
  below half of θ0's: the embedding has collapsed, not sharpened;
- ``unchanged``: forget mAP and forget CS both within 0.01 of θ0's: the run did not move the model;
- ``ok``: neither.

It is written into ``metrics.json``, printed as a warning line when a run ends, and marked in the report.
"""

from __future__ import annotations

import math

COLLAPSED_CS = 0.99  # retain CS at or above this, ...
COLLAPSED_RETAIN_SHARE = 0.5  # ... with retain mAP below this share of θ0's: collapsed
UNCHANGED_DELTA = 0.01  # forget mAP and forget CS within this of θ0's: unchanged

ADVICE = {
    "collapsed": "lower model.lr (e.g. ÷10), take fewer steps (trainer.max_epochs, model.min_steps) or add a retain "
                 "term (model.retain_weight)",
    "unchanged": "raise model.lr (e.g. ×10) or take more steps (model.min_steps, trainer.max_epochs)",
    "ok": "",
}


def run_status(metrics: dict[str, float]) -> dict[str, str] | None:
    """``{"verdict", "rule", "advice"}`` for an unlearning run's final metrics; None when they hold no θ0 values
    to compare with (pretraining, the oracle, a run without evaluation)."""
    values = {key: metrics.get(key, math.nan) for key in (
        "forget/mAP", "forget/CS", "retain/mAP", "retain/CS",
        "original/forget/mAP", "original/forget/CS", "original/retain/mAP")}
    if any(math.isnan(values[k]) for k in ("forget/mAP", "original/forget/mAP")):
        return None
    retain, retain0, retain_cs = values["retain/mAP"], values["original/retain/mAP"], values["retain/CS"]
    if retain_cs >= COLLAPSED_CS and retain < COLLAPSED_RETAIN_SHARE * retain0:
        verdict = "collapsed"
        rule = (f"retain CS {retain_cs:.3f} ≥ {COLLAPSED_CS} and retain mAP {retain:.3f} < "
                f"{COLLAPSED_RETAIN_SHARE} × θ0's {retain0:.3f}")
    else:
        compared = [name for name in ("mAP", "CS")  # CS where both were measured
                    if not math.isnan(values[f"forget/{name}"] - values[f"original/forget/{name}"])]
        if all(abs(values[f"forget/{n}"] - values[f"original/forget/{n}"]) < UNCHANGED_DELTA for n in compared):
            verdict = "unchanged"
            rule = " and ".join(f"forget {n} {values[f'forget/{n}']:.3f}" for n in compared) + (
                f" within {UNCHANGED_DELTA} of θ0's ("
                + ", ".join(f"{values[f'original/forget/{n}']:.3f}" for n in compared) + ")")
        else:
            verdict = "ok"
            rule = (f"forget mAP {values['original/forget/mAP']:.3f} → {values['forget/mAP']:.3f}; not collapsed "
                    f"(retain CS {retain_cs:.3f}, retain mAP {retain:.3f} of θ0's {retain0:.3f})")
    return {"verdict": verdict, "rule": rule, "advice": ADVICE[verdict]}


def status_line(run: str, status: dict[str, str]) -> str:
    """The warning printed at the end of a run that did nothing or collapsed (empty for ``ok``)."""
    if status["verdict"] == "ok":
        return ""
    what = "left θ0 unchanged" if status["verdict"] == "unchanged" else "collapsed the embedding"
    return f"warning: {run} {what} ({status['rule']}): {status['advice']}"
