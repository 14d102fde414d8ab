"""``make demo`` / ``unlearnkit demo``: the whole study in miniature on the generated face set.

Generates the set, pretrains θ0, evaluates the untrained and the pretrained backbone, measures how well the
label-free quality score tracks the known degradation, retrains the oracle, unlearns with every method on
the identity protocol and with CURE and the label-free baselines on the sample protocol, then writes the
comparison report. Every step is a normal CLI run with its own run directory under ``--out``. The console gets one
line per run (elapsed time, what runs, its headline figures when it ends), then the report; each run's own output
goes to ``<run_dir>/output.log`` (``--verbose``: Lightning's output on the console instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from unlearnkit.errors import ConfigError

# each protocol of the demo and its data options
PROTOCOL_ARGS = {"identity": [], "sample": ["--data.protocol", "sample", "--data.forget", "0.1"]}


def model_options(options: Mapping[str, object]) -> list[str]:
    """Model options as CLI arguments: ``{"lr": 0.01}`` → ``["--model.lr", "0.01"]``."""
    return [x for key, value in options.items() for x in (f"--model.{key}", str(value))]


def experiment_config(path: str | Path) -> dict:
    """An experiment config (``configs/experiment/*.yaml``: its trainer, data and model), read for the runners that
    build runs from one (the audit, ``unlearnkit tune``)."""
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict) or "trainer" not in config:
        raise ConfigError(f"{path} is not an experiment config (with trainer, data and model): see configs/experiment/")
    return config


def experiment_part(path: str | Path, key: str) -> dict:
    """The YAML a part (``data``, ``model``) of an experiment config points to, or holds inline."""
    value = experiment_config(path)[key]
    return yaml.safe_load((Path(path).parent / value).read_text()) if isinstance(value, str) else value


def option_value(args: list[str], name: str, default=None):
    """The value given to ``name`` in CLI arguments (``["--data.protocol", "sample"]``), else ``default``."""
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else default


def demo_plan(methods: str | None = None) -> dict[str, list[tuple[str, list[str]]]]:
    """The demo's unlearning runs by protocol: each method's name and its own arguments, read from the registry's
    declarations. Identity protocol: every unlearning method; sample protocol: the label-free comparison (label-free
    methods as themselves, then the label-free baselines with ``--model.labels pseudo``). Each method runs with its
    own defaults and its ``demo_overrides``; ``methods`` (comma-separated class names) keeps a subset."""
    from unlearnkit.methods import label_free_comparison, unlearning_methods

    registry = unlearning_methods()
    plan = {"identity": [(name, model_options(cls.demo_overrides)) for name, cls in registry.items()],
            "sample": [(name, [*(["--model.labels", "pseudo"] if pseudo else []),
                               *model_options(registry[name].demo_overrides)])
                       for name, pseudo in label_free_comparison().items()]}
    plan = {protocol: [run for run in runs if run[0] in chosen(methods, [name for name, _ in runs])]
            for protocol, runs in plan.items()}
    return {protocol: runs for protocol, runs in plan.items() if runs}


def cli(args: list[str]) -> dict:
    """One in-process CLI run, skipped when finished and resumed from its last checkpoint when stopped;
    returns its metrics.json ``metrics``."""
    from unlearnkit.cli.lightning_cli import run

    run_dir = Path(args[args.index("--run_dir") + 1])
    if not (run_dir / "metrics.json").exists():
        last = run_dir / "checkpoints" / "last.ckpt"
        code = run([*args, "--ckpt_path", str(last)] if last.is_file() else args)
        if code:
            raise SystemExit(code)
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


QUICK_EPOCHS = 2  # every run's epochs in --quick mode (a smoke test)


def trainer_overlay(template: Path, out: Path, evaluation: dict | None = None, **overrides) -> Path:
    """A trainer config written to ``out``: ``template`` with ``overrides``, and ``evaluation`` added to the
    evaluation callback's init args (e.g. ``{"oracle": <retrain checkpoint>}``)."""
    config = yaml.safe_load(template.read_text())
    config.update(overrides)
    for callback in config.get("callbacks", []):
        if callback["class_path"].endswith("FaceEvaluation") and evaluation:
            callback.setdefault("init_args", {}).update(evaluation)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def evaluate_at_end(template: Path, quick: bool) -> list[str]:
    """The trainer option that evaluates a run once, after its last epoch (``template``'s, or the quick mode's)."""
    epochs = QUICK_EPOCHS if quick else yaml.safe_load(template.read_text())["max_epochs"]
    return ["--trainer.check_val_every_n_epoch", str(epochs)]


def quality_correlation(run_dir: Path, data_args: list[str]) -> float:
    """Spearman correlation of θ0's embedding-stability score with the generator's true image quality."""
    from scipy.stats import spearmanr

    from unlearnkit.data.datamodule import SyntheticFaces
    from unlearnkit.data.quality import score_source
    from unlearnkit.methods.base import Pretrain

    model = Pretrain.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                                          weights_only=True)
    dm = SyntheticFaces(**yaml.safe_load(Path(data_args[1]).read_text())["init_args"])
    dm.setup()
    scores = score_source(model.backbone, dm.source, dm.transform)
    return float(spearmanr(scores, dm.source.qualities).statistic)


class Console:
    """The demo's output. Quiet (the default): one line per run, ``[elapsed] n/N what: headline figures``, kept
    live with the seconds spent while a run works when the output is a terminal; each run's own output (Lightning,
    W&B, warnings) goes to ``<run_dir>/output.log``, redirected at the file-descriptor level so that nothing
    reaches the terminal. Verbose: Lightning's own output, the same lines between the runs."""

    def __init__(self, total: int, verbose: bool) -> None:
        self.total, self.count, self.started = total, 0, time.perf_counter()
        self.out = None
        try:  # the terminal as the demo found it, kept while the runs write elsewhere
            sys.stdout.flush()
            self.out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
        except (AttributeError, OSError, ValueError):  # no real file descriptor (e.g. captured): nothing to hide
            verbose = True
        self.verbose = verbose
        self.live = self.out is not None and self.out.isatty()

    def print(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def minutes(self) -> float:
        return (time.perf_counter() - self.started) / 60

    def run(self, what: str, run_dir: Path, step, headline) -> dict:
        """Run ``step()`` (one CLI run into ``run_dir``), then print its line with ``headline(metrics, summary)``."""
        self.count += 1
        prefix = f"{self.count:2d}/{self.total} {what:<24}"
        began = time.perf_counter()
        if self.verbose:
            self.print(f"[{self.minutes():5.1f} min] {prefix} running (--verbose: Lightning's output follows)")
            metrics = step()
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            ticking = threading.Event()
            ticker = threading.Thread(target=self._tick, args=(prefix, began, ticking), daemon=True)
            if self.live:
                ticker.start()
            try:
                with output_to(run_dir / "output.log"):
                    metrics = step()
            except BaseException as err:
                self._stop(ticker, ticking)
                line = (f"[{self.minutes():5.1f} min] {prefix} failed: {_last_error(run_dir / 'output.log', err)} "
                        f"(its output: {run_dir / 'output.log'})")
                self.print(f"\r{line}\033[K" if self.live else line)
                raise
            self._stop(ticker, ticking)
        summary_path = run_dir / "metrics.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        line = (f"[{self.minutes():5.1f} min] {prefix} done in {time.perf_counter() - began:3.0f} s: "
                f"{headline(metrics, summary)}")
        self.print(f"\r{line}\033[K" if self.live else line)  # a live line is overwritten, to its end
        return metrics

    @staticmethod
    def _stop(ticker: threading.Thread, ticking: threading.Event) -> None:
        ticking.set()
        if ticker.is_alive():
            ticker.join()

    def _tick(self, prefix: str, began: float, stop: threading.Event) -> None:
        """While a run works: its line with the seconds spent, rewritten in place every second."""
        spinner = "|/-\\"
        n = 0
        while not stop.wait(0.0 if n == 0 else 1.0):
            self.out.write(f"\r[{self.minutes():5.1f} min] {prefix} running {time.perf_counter() - began:3.0f} s "
                           f"{spinner[n % 4]}\033[K")
            self.out.flush()
            n += 1


@contextlib.contextmanager
def output_to(path: Path):
    """Everything written to file descriptors 1 and 2 (Python, Lightning's logging, C code, child processes) goes
    to ``path`` (appended) while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _last_error(log: Path, err: BaseException) -> str:
    """The run's own error line (``error: …`` from the CLI), else the exception."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else f"{type(err).__name__}: {err}"


def _figures(metrics: dict, keys: list[tuple[str, str]]) -> str:
    return ", ".join(f"{label} {metrics[key]:.3f}" for key, label in keys if key in metrics)


def foundation_headline(metrics: dict, summary: dict) -> str:
    return _figures(metrics, [("retain/R@1", "retain R@1"), ("retain/mAP", "retain mAP")])


def oracle_headline(metrics: dict, summary: dict) -> str:
    return _figures(metrics, [("forget/mAP", "forget mAP"), ("retain/mAP", "retain mAP")])


def method_headline(metrics: dict, summary: dict) -> str:
    """Forget / retain mAP and UES, and the run's status where it did nothing or collapsed (``unlearnkit.status``)."""
    text = _figures(metrics, [("forget/mAP", "forget mAP"), ("retain/mAP", "retain mAP"), ("UES", "UES")])
    status = summary.get("status") or {}
    if status.get("verdict", "ok") != "ok":
        text += f"  ⚠ {status['verdict']}: {status['advice']}"
    return text


def chosen(methods: str | None, available: list[str]) -> list[str]:
    """The methods of ``available`` named in ``methods`` (comma-separated; None: all)."""
    if methods is None:
        return available
    from unlearnkit.methods import unlearning_methods

    names = [name.strip() for name in methods.split(",") if name.strip()]
    unknown = [name for name in names if name not in unlearning_methods()]
    if unknown:
        from unlearnkit.errors import ConfigError

        raise ConfigError(f"unknown method {unknown[0]!r} in --methods: choose among "
                          f"{', '.join(unlearning_methods())}")
    return [name for name in available if name in names]


def run_demo(out: str = "runs/demo", configs: str = "configs", quick: bool = False, wandb: bool = True,
             verbose: bool = False, methods: str | None = None) -> Path:
    out, configs = Path(out), Path(configs)
    out.mkdir(parents=True, exist_ok=True)
    lightning_output = ["--trainer.enable_progress_bar", str(verbose).lower(),
                        "--trainer.enable_model_summary", str(verbose).lower()]
    common = ["--wandb", str(wandb).lower(), *lightning_output]
    data = ["--data", str(configs / "data/synthetic.yaml")]
    if quick:
        common += ["--trainer.max_epochs", str(QUICK_EPOCHS)]
    plan = demo_plan(methods)
    console = Console(2 + sum(1 + len(runs) for runs in plan.values()), verbose)
    console.print(f"unlearnkit demo: {console.total} runs on the generated faces, each a CLI run under {out}/ with "
                  f"its own output in output.log{'' if console.verbose else ' (--verbose shows it here)'}")

    def run(what: str, run_dir: Path, args: list[str], headline) -> dict:
        return console.run(what, run_dir, lambda: cli([*args, "--run_dir", str(run_dir), *common]), headline)

    pretrain = run("pretrain θ0", out / "pretrain", ["fit", "--config",
                   str(configs / "experiment/pretrain_synthetic.yaml")], foundation_headline)
    original = out / "pretrain" / "checkpoints" / "last.ckpt"
    untrained = run("untrained backbone", out / "untrained", ["validate", "--config",
                    str(configs / "experiment/pretrain_synthetic.yaml")], foundation_headline)
    with contextlib.nullcontext() if console.verbose else output_to(out / "quality.log"):
        rho = quality_correlation(out / "pretrain", data)
    foundation = "\n".join([
        f"untrained backbone  retain R@1 {untrained.get('retain/R@1', float('nan')):.3f}"
        f"  mAP {untrained.get('retain/mAP', float('nan')):.3f}",
        f"pretrained θ0       retain R@1 {pretrain.get('retain/R@1', float('nan')):.3f}"
        f"  mAP {pretrain.get('retain/mAP', float('nan')):.3f}",
        f"quality score vs true degradation: Spearman {rho:.3f}"])
    console.print(f"\n== θ0 ready after {console.minutes():.1f} min ==\n{foundation}\n")

    runs = []
    for protocol, found in plan.items():
        extra = PROTOCOL_ARGS[protocol]
        retrain_dir = out / f"{protocol}-retrain"
        # oracles and unlearning runs are evaluated once, after their last epoch: the report reads only that
        run(f"{protocol}-retrain", retrain_dir, ["fit", "--config", str(configs / "experiment/retrain_synthetic.yaml"),
                                                 *extra, *evaluate_at_end(configs / "trainer/cpu_pretrain.yaml", quick)],
            oracle_headline)
        runs.append(retrain_dir)
        unlearn_template = configs / "trainer/cpu_unlearn.yaml"
        trainer = trainer_overlay(unlearn_template, out / f"trainer-{protocol}.yaml",
                                  {"oracle": str(retrain_dir / "checkpoints" / "last.ckpt")},
                                  check_val_every_n_epoch=int(evaluate_at_end(unlearn_template, quick)[1]))
        for method, own in found:
            run_dir = out / f"{protocol}-{method}{'-pseudo' if '--model.labels' in own else ''}"
            run(run_dir.name, run_dir, ["fit", "--config", str(configs / "experiment/unlearn_synthetic.yaml"),
                                        "--trainer", str(trainer), "--model", method, "--model.original", str(original),
                                        *own, *extra], method_headline)
            runs.append(run_dir)

    from unlearnkit.report import write_report

    report = write_report([out / "pretrain", *runs], out / "report")
    console.print("\n== unlearnkit demo ==")
    console.print(foundation)
    console.print(Path(report).read_text() if Path(report).is_file() else str(report))
    console.print(f"demo finished in {console.minutes():.1f} min; runs under {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unlearnkit demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--configs", default="configs")
    parser.add_argument("--quick", action="store_true", help="2 epochs per run (a smoke test)")
    parser.add_argument("--no-wandb", action="store_true")
    parser.add_argument("--verbose", action="store_true",
                        help="Lightning's own output (progress bars, model summaries) instead of one line per run")
    parser.add_argument("--methods", default=None,
                        help="comma-separated unlearning methods to run, e.g. Dispersion,Cure (default: every one)")
    args = parser.parse_args(argv)
    run_demo(args.out, args.configs, args.quick, not args.no_wandb, args.verbose, args.methods)
    return 0
