"""Fair tuning (issue 19): every method gets the same Optuna trial budget over the search space it declares
(``tuning``, a ``SearchSpace``), judged by what its protocol asks for, on a validation forget draw.

Objectives are pure functions of a run's metrics (``metrics.json``'s ``metrics``); lower is better:

- ``identity`` (make people unretrievable): forget mAP, subject to retain mAP ≥ θ0's − 0.02 and, where the run
  has verification on unseen people (``verify/<set>/unseen/acc``), that accuracy ≥ θ0's − 0.01. A feasible trial
  scores its forget mAP (in [0, 1]); an infeasible one 1 + its total violation, after every feasible trial and
  nearer ones first.
- ``oracle_gap`` (sample and quality protocols: look like the retrain oracle): the mean two-sided gap to the oracle
  over forget mAP, held-out retain mAP, the memorisation gap and the forget-vs-held-out attack AUC (SalUn's
  "Avg. Gap"); the runs need the oracle in their evaluation.
- ``ues``: −UES against θ0 (the study's criterion before issue 19; CURE's metric).
- ``auto``: ``identity`` for the identity protocol, ``oracle_gap`` for the others.

``tune`` runs the trials: TPE (seeded), the method's own defaults as the first trial, the study kept in SQLite so a
stopped tuning resumes (completed trials are not re-run, one that stopped mid-way is), and ``tuning.json`` beside
the database. ``unlearnkit tune`` (``main``) runs each trial as an ordinary ``fit`` on the validation forget draw.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.protocols import PROTOCOLS
from unlearnkit.utils.io import write_json

RETAIN_DROP = 0.02  # identity objective: retain mAP may fall this far below θ0's
VERIFY_DROP = 0.01  # and verification on unseen people this far
INFEASIBLE = 1.0  # feasible identity trials score forget mAP ≤ 1; infeasible ones 1 + their violation
GAP_METRICS = ("forget/mAP", "retain_heldout/mAP", "memorisation/mAP", "mia/forget_auc")

_HINTS = {"oracle/": "evaluate the trials against the retrain oracle (unlearnkit tune --oracle <retrain last.ckpt>)",
          "original/": "the runs must be unlearning runs from θ0 (--model.original)",
          "retain_heldout/": "it is a metric of the sample and quality protocols",
          "memorisation/": "it is a metric of the sample and quality protocols",
          "mia/": "turn the membership attack on (the evaluation callback's mia: true)"}


class TrialFailed(UnlearnkitError):
    """A tuning trial's run stopped with an error."""


def _metric(metrics: Mapping[str, float], key: str, objective: str) -> float:
    if key not in metrics:
        hint = next((h for prefix, h in _HINTS.items() if key.startswith(prefix)), "check the run's metrics.json")
        raise ConfigError(f"objective {objective!r} needs the metric {key!r}, which the run lacks: {hint}")
    return float(metrics[key])


def _shortfall(value: float, bound: float) -> float:
    """How far ``value`` lies below ``bound`` (0 when it does not; infinite when it is not a number)."""
    return max(0.0, bound - value) if math.isfinite(value) else math.inf


def _finite(value: float) -> float:
    """A diverged run's NaN ranks last."""
    return value if value == value else math.inf


def identity_violation(metrics: Mapping[str, float]) -> float:
    """Total violation of the identity protocol's bounds: retain mAP below θ0's − 0.02, plus each unseen-people
    verification accuracy below θ0's − 0.01 (where the run has one)."""
    violation = _shortfall(_metric(metrics, "retain/mAP", "identity"),
                           _metric(metrics, "original/retain/mAP", "identity") - RETAIN_DROP)
    for key in sorted(metrics):
        if key.startswith("verify/") and key.endswith("/unseen/acc") and f"original/{key}" in metrics:
            violation += _shortfall(float(metrics[key]), float(metrics[f"original/{key}"]) - VERIFY_DROP)
    return violation if violation > 1e-12 else 0.0  # a drop of exactly the bound is feasible despite rounding


def identity_objective(metrics: Mapping[str, float]) -> float:
    """Forget mAP when the bounds hold, else 1 + the violation (after every feasible trial)."""
    forget = _finite(_metric(metrics, "forget/mAP", "identity"))
    violation = identity_violation(metrics)
    return forget if violation == 0 else INFEASIBLE + violation


def oracle_gaps(metrics: Mapping[str, float]) -> dict[str, float]:
    """The two-sided gap to the oracle of each of ``GAP_METRICS`` (from ``oracle/<key>``, else ``oracle_gap/<key>``)."""
    gaps = {}
    for key in GAP_METRICS:
        if f"oracle/{key}" not in metrics and f"oracle_gap/{key}" in metrics:
            gaps[key] = float(metrics[f"oracle_gap/{key}"])
        else:
            gaps[key] = abs(_metric(metrics, key, "oracle_gap") - _metric(metrics, f"oracle/{key}", "oracle_gap"))
    return gaps


def oracle_gap_objective(metrics: Mapping[str, float]) -> float:
    """SalUn's "Avg. Gap": the mean two-sided gap to the oracle over ``GAP_METRICS``."""
    gaps = oracle_gaps(metrics)
    return _finite(sum(gaps.values()) / len(gaps))


def ues_objective(metrics: Mapping[str, float]) -> float:
    """−UES (UES against θ0, higher is better)."""
    return _finite(-_metric(metrics, "UES", "ues"))


@dataclass(frozen=True)
class Objective:
    """A named objective: its function (lower is better), the protocols whose runs have its metrics, whether it
    needs the oracle, and the metrics a trial's line shows beside it."""

    name: str
    score: Callable[[Mapping[str, float]], float]
    protocols: tuple[str, ...]
    needs_oracle: bool
    shown: tuple[str, ...]


OBJECTIVES = {
    "identity": Objective("identity", identity_objective, PROTOCOLS, False, ("forget/mAP", "retain/mAP")),
    "oracle_gap": Objective("oracle_gap", oracle_gap_objective, ("sample", "quality"), True, GAP_METRICS),
    "ues": Objective("ues", ues_objective, PROTOCOLS, False, ("UES", "forget/mAP", "retain/mAP")),
}
AUTO = {"identity": "identity", "sample": "oracle_gap", "quality": "oracle_gap"}


def resolve_objective(name: str, protocol: str) -> Objective:
    """The objective ``name`` stands for in ``protocol`` (``auto``: the protocol's own); one-line errors for an
    unknown name or protocol, or an objective whose metrics the protocol's runs lack."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}: choose among {', '.join(PROTOCOLS)}")
    key = AUTO[protocol] if name == "auto" else name
    if key not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}: choose among auto, {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[key]
    if protocol not in objective.protocols:
        raise ConfigError(f"objective {key!r} needs metrics of the {' and '.join(objective.protocols)} protocols, "
                          f"which {protocol!r} runs lack: use --objective auto or identity")
    return objective


@dataclass
class TrialRecord:
    """One completed trial: its Optuna number, setting (option → value, ``epochs`` included), metrics and value."""

    number: int
    setting: dict
    value: float
    metrics: dict = field(repr=False)


@dataclass
class TuneResult:
    """A tuning's outcome: the best setting and every completed trial (written as ``tuning.json``)."""

    method: str
    protocol: str
    objective: str
    budget: int
    seed: int
    storage: str
    space: dict
    best: dict
    best_value: float
    best_trial: int
    trials: list[TrialRecord]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def trial_arguments(setting: Mapping[str, object], evaluate_once: bool = True) -> list[str]:
    """A setting as CLI arguments: ``--model.<option> <value>`` for each option, ``epochs`` as
    ``--trainer.max_epochs`` (and, ``evaluate_once``, one evaluation after the last epoch)."""
    from unlearnkit.demo import model_options

    out = model_options({k: v for k, v in setting.items() if k != "epochs"})
    if "epochs" in setting:
        epochs = str(setting["epochs"])
        out += ["--trainer.max_epochs", epochs, *(["--trainer.check_val_every_n_epoch", epochs] if evaluate_once else [])]
    return out


def _space_and_defaults(method: str):
    from unlearnkit.methods import method_defaults, unlearning_methods

    registry = unlearning_methods()
    if method not in registry:
        raise ConfigError(f"unknown method {method!r}: choose among {', '.join(registry)}")
    cls = registry[method]
    defaults = method_defaults(cls)
    cls.tuning.check(method, defaults)
    return cls.tuning, defaults


def requeue_unfinished(study) -> int:
    """Trials a stopped tuning left running are marked failed, and every failed trial's setting is queued again
    (once) so it is re-run; returns how many were queued."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)  # this process is the only one tuning this study
    trials = study.get_trials(deepcopy=False)
    # a queued trial has no params yet, only the ones it was queued with
    pending = [t.params for t in trials if t.state == TrialState.COMPLETE]
    pending += [t.system_attrs.get("fixed_params", {}) for t in trials if t.state == TrialState.WAITING]
    queued = 0
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.params and trial.params not in pending:
            study.enqueue_trial(trial.params)
            pending.append(trial.params)
            queued += 1
    return queued


def _describe(setting: Mapping[str, object]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())


def tune(method: str, run_trial: Callable[[dict], Mapping[str, float]], protocol: str, budget: int = 16,
         storage: str | Path = "optuna.db", seed: int = 0, objective: str = "auto", *, space=None,
         defaults: Mapping[str, object] | None = None, progress: Callable[[str], None] | None = print) -> TuneResult:
    """Tune ``method`` with ``budget`` completed trials; ``run_trial(setting) -> metrics`` runs one (the caller
    decides how: e.g. a ``fit`` on the validation forget draw). ``storage``: the SQLite file of the Optuna study
    (one study per method, protocol and objective; ``tuning.json`` is written beside it after every trial).
    ``space``/``defaults``: the method's declared ``SearchSpace`` and its defaults unless given (e.g. other epochs).
    ``progress``: receives one line per trial (None: silent). A run that raises marks its trial failed and
    re-raises; calling ``tune`` again re-runs it and continues."""
    import optuna
    from optuna.trial import TrialState

    if budget < 1:
        raise ConfigError(f"the tuning budget must be at least 1 trial, got {budget}")
    chosen = resolve_objective(objective, protocol)
    if space is None or defaults is None:
        declared, declared_defaults = _space_and_defaults(method)
        space, defaults = space or declared, defaults if defaults is not None else declared_defaults
    storage = Path(storage)
    storage.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, budget // 3), multivariate=True)
    study = optuna.create_study(study_name=f"{method}-{protocol}-{chosen.name}", storage=f"sqlite:///{storage}",
                                sampler=sampler, direction="minimize", load_if_exists=True)
    searched = space.describe(defaults)
    if study.user_attrs.get("space", searched) != searched:
        raise ConfigError(f"the tuning in {storage} searched another space ({study.user_attrs['space']}, now "
                          f"{searched}): resume it with the same options, or tune into another directory")
    study.set_user_attr("space", searched)
    queued = requeue_unfinished(study)
    say = progress or (lambda line: None)
    if not study.trials:
        study.enqueue_trial(space.default_setting(defaults))  # the method as configured is the first trial
    else:
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        say(f"resuming {storage}: {complete} of {budget} trials done" + (f", {queued} to re-run" if queued else ""))

    def completed() -> list:
        return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def result() -> TuneResult:
        trials = [TrialRecord(t.number, t.user_attrs["setting"], t.value, t.user_attrs["metrics"]) for t in completed()]
        best = min(trials, key=lambda t: (t.value, t.number))
        out = TuneResult(method, protocol, chosen.name, budget, seed, str(storage), searched, best.setting,
                         best.value, best.number, trials)
        write_json(storage.parent / "tuning.json", out.to_dict())
        return out

    while len(completed()) < budget:
        trial = study.ask()
        setting = space.suggest(trial, defaults)
        try:
            metrics = dict(run_trial(dict(setting)))
            value = chosen.score(metrics)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("setting", setting)
        trial.set_user_attr("metrics", metrics)
        study.tell(trial, value)
        shown = " ".join(f"{k} {float(metrics[k]):.3f}" for k in chosen.shown if k in metrics)
        say(f"trial {len(completed())}/{budget} {_describe(setting)}: {chosen.name} {value:.4f} ({shown})")
        result()
    return result()


# ---- unlearnkit tune ----

def _trial_dir(out: Path, setting: Mapping[str, object]) -> Path:
    """A trial's run directory, named by its setting: a trial re-run after a stop resumes its own run."""
    digest = hashlib.sha1(json.dumps(dict(setting), sort_keys=True).encode()).hexdigest()[:10]
    return out / "trials" / f"trial-{digest}"


class TuneCommand:
    """``unlearnkit tune``'s plan: the checks on its input, the trial runs and the command that runs the choice."""

    def __init__(self, args: argparse.Namespace) -> None:
        from unlearnkit.demo import experiment_config, experiment_part, option_value

        self.args = args
        self.space, self.defaults = _space_and_defaults(args.method)
        if args.trials < 1:
            raise ConfigError(f"--trials {args.trials}: tune at least 1 trial")
        if args.epochs:
            self.space = dataclasses.replace(self.space, epochs=tuple(args.epochs))
        for option, instead in (("--data.forget_seed", "--forget-seed"), ("--trainer.max_epochs", "--epochs"),
                                ("--run_dir", "--out")):
            if any(a == option or a.startswith(option + "=") for a in args.extra):
                raise ConfigError(f"{option} after --: tuning sets it for every trial; use {instead} instead")
        if not Path(args.config).is_file():
            raise ConfigError(f"--config {args.config}: no such file; give an unlearning experiment config "
                              f"(configs/experiment/)")
        trainer = experiment_config(args.config)["trainer"]
        if not isinstance(trainer, str):
            raise ConfigError(f"{args.config}: tuning needs the trainer as a path to a trainer config, not inline")
        data = experiment_part(args.config, "data").get("init_args", {})
        self.protocol = option_value(args.extra, "--data.protocol") or data.get("protocol", "identity")
        self.objective = resolve_objective(args.objective, self.protocol)
        if self.objective.needs_oracle and not args.oracle:
            raise ConfigError(f"objective {self.objective.name!r} compares each trial with the retrain oracle: "
                              f"give --oracle <retrain last.ckpt> (trained on the validation draw's retain set)")
        if args.oracle and not Path(args.oracle).is_file():
            raise ConfigError(f"oracle checkpoint {args.oracle!r} not found: give the retrain run's last.ckpt")
        original = option_value(args.extra, "--model.original") or experiment_part(args.config, "model").get(
            "init_args", {}).get("original")
        if not original or not Path(original).is_file():
            raise ConfigError(f"θ0 checkpoint {original!r} not found: pass --model.original <last.ckpt> after --")
        self.out = Path(args.out or f"runs/tune/{args.method}")
        # as the study and the audit: a method that needs labels runs label-free outside the identity protocol
        from unlearnkit.methods import unlearning_methods

        pseudo = unlearning_methods()[args.method].needs_labels and self.protocol != "identity" \
            and "--model.labels" not in args.extra
        self.model = ["--model", args.method, *(["--model.labels", "pseudo"] if pseudo else [])]
        self.trainer_template = Path(args.config).parent / trainer
        self.trainer_path: Path | None = None

    def trainer(self) -> Path:
        """The experiment's trainer with the oracle added to the evaluation and what the objectives never read off."""
        from unlearnkit.demo import trainer_overlay

        evaluation = {"plots": False, "per_identity": False, "noise_baseline": False}
        if self.args.oracle:
            evaluation["oracle"] = str(self.args.oracle)
        return trainer_overlay(self.trainer_template, self.out / "trainer.yaml", evaluation)

    def run_trial(self, setting: dict) -> dict:
        """One trial: an ordinary ``fit`` on the validation forget draw, evaluated once at its end; its output goes
        to ``<trial>/output.log``."""
        from unlearnkit.demo import cli, output_to

        run_dir = _trial_dir(self.out, setting)
        run_dir.mkdir(parents=True, exist_ok=True)
        args = ["fit", "--config", self.args.config, "--trainer", str(self.trainer_path), *self.model,
                *self.args.extra, "--data.forget_seed", str(self.args.forget_seed), *trial_arguments(setting),
                "--wandb", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false", "--run_dir", str(run_dir)]
        log = run_dir / "output.log"
        try:  # file descriptors and Python's streams both (these differ where the caller captures them, e.g. pytest)
            with output_to(log), open(log, "a", buffering=1, encoding="utf-8") as text, \
                    contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                return cli(args)
        except SystemExit as err:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error:")]
            reason = lines[-1][len("error:"):].strip() if lines else f"exit code {err.code}"
            raise TrialFailed(f"the trial run {run_dir} failed: {reason} (its output: {log})") from None

    def final_command(self, setting: Mapping[str, object]) -> str:
        """The ``unlearnkit fit`` command that runs ``setting`` on the evaluation split (the config's own draw)."""
        return shlex.join(["unlearnkit", "fit", "--config", self.args.config, *self.model, *self.args.extra,
                           *trial_arguments(setting, evaluate_once=False)])

    def check_same_tuning(self) -> None:
        """A tuning directory is resumed only with the options it was started with: its trial runs are reused by
        setting, so runs of another θ0, draw or oracle must not be taken for this tuning's."""
        a = self.args
        options = {"config": a.config, "method": a.method, "objective": self.objective.name, "oracle": a.oracle,
                   "forget_seed": a.forget_seed, "extra": a.extra}
        path = self.out / "tune_options.json"
        if path.is_file() and json.loads(path.read_text()) != options:
            raise ConfigError(f"{self.out} holds a tuning started with other options ({path}): resume it with the "
                              f"same ones, or give another --out")
        write_json(path, options)

    def run(self) -> TuneResult:
        self.check_same_tuning()
        self.trainer_path = self.trainer()
        print(f"tuning {self.args.method} ({self.protocol} protocol, objective {self.objective.name}, "
              f"{self.args.trials} trials, forget draw {self.args.forget_seed}) in {self.out}", flush=True)
        result = tune(self.args.method, self.run_trial, self.protocol, budget=self.args.trials,
                      storage=self.out / "optuna.db", seed=self.args.seed, objective=self.objective.name,
                      space=self.space, defaults=self.defaults, progress=lambda line: print(line, flush=True))
        print(f"best: trial {result.best_trial} {_describe(result.best)}: {result.objective} {result.best_value:.4f}"
              f" ({len(result.trials)} trials, {self.out / 'tuning.json'})")
        print(f"run it on the evaluation split:\n  {self.final_command(result.best)}")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unlearnkit tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the unlearning experiment config (data, θ0, trainer)")
    parser.add_argument("--method", required=True, help="the method's class name, e.g. Dispersion")
    parser.add_argument("--trials", type=int, default=16, help="completed trials (the budget; default 16)")
    parser.add_argument("--out", default=None, help="the tuning's directory (default runs/tune/<method>)")
    parser.add_argument("--objective", default="auto", help=f"auto, {', '.join(OBJECTIVES)} (default auto)")
    parser.add_argument("--oracle", default=None, help="the retrain oracle's checkpoint (objective oracle_gap)")
    parser.add_argument("--epochs", type=int, nargs="+", default=None,
                        help="trainer epochs to choose among (default: the method's declared ones)")
    parser.add_argument("--forget-seed", type=int, default=1, help="the validation forget draw (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed (default 0)")
    parser.add_argument("extra", nargs="*", help="after --: options given to every trial (data, θ0, ...)")
    args = parser.parse_args(argv)
    TuneCommand(args).run()
    return 0
