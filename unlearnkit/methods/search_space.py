"""What tuning searches for a method: its declared search space (``tuning`` on the method's class).

``SearchSpace.suggest`` draws one setting from an Optuna trial (``unlearnkit.tuning``: the same TPE budget for
every method): the learning rate log-uniform over its range (by default two decades below the method's default
and one above: three decades), the epochs, the strength knob and the other loss weights (categorical, or float
ranges where a method declares a ``Range``); ``default_setting`` is the method as configured, the first trial.
The study's trade-off fronts walk the learning rate over ``LogUniform.bounds``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from unlearnkit.errors import ConfigError

# learning rates: two decades below a method's default and one above (the defaults sit near the largest rate the
# probes found stable: bad teacher collapses at 5x its default, fine-tuning at 10x destroys the model)
DEFAULT_DECADES = (2.0, 1.0)


@dataclass(frozen=True)
class LogUniform:
    """A positive option searched on a log scale over [low, high]; a bound left unset lies ``decades`` decades
    from the option's default: one number for both sides, or (below, above); by default two below and one above."""

    low: float | None = None
    high: float | None = None
    decades: float | tuple[float, float] = DEFAULT_DECADES

    def __post_init__(self) -> None:
        below, above = self.spread
        if any(b is not None and b <= 0 for b in (self.low, self.high)) or below < 0 or above < 0:
            raise ConfigError(f"LogUniform needs positive bounds and decades ≥ 0, got {self}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ConfigError(f"LogUniform low {self.low} is above high {self.high}")

    @property
    def spread(self) -> tuple[float, float]:
        """Decades (below, above) the default."""
        if isinstance(self.decades, (int, float)):
            return float(self.decades), float(self.decades)
        below, above = self.decades
        return float(below), float(above)

    def bounds(self, default: float) -> tuple[float, float]:
        below, above = self.spread
        low = default / 10**below if self.low is None else self.low
        high = default * 10**above if self.high is None else self.high
        return low, high


@dataclass(frozen=True)
class Knob:
    """One option of the method and the values tuning tries (categorical); the first stands for the method's own
    value where that is not among them."""

    name: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError(f"Knob {self.name!r} has no values: give at least its default")
        object.__setattr__(self, "values", tuple(self.values))

    def suggest(self, trial) -> float:
        return trial.suggest_categorical(self.name, list(self.values)) if len(self.values) > 1 else self.values[0]

    def default(self, defaults: Mapping[str, object]) -> float:
        """The method's own value where it is one of ``values``, else the first."""
        return defaults[self.name] if defaults.get(self.name) in self.values else self.values[0]


@dataclass(frozen=True)
class Range:
    """An option searched over the interval [low, high] (on a log scale with ``log``); ``values``: its ends."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if self.low > self.high or (self.log and self.low <= 0):
            raise ConfigError(f"Range {self.name!r} needs low ≤ high (and low > 0 with log), got {self}")

    @property
    def values(self) -> tuple[float, float]:
        return (self.low, self.high)

    def suggest(self, trial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log) if self.low < self.high else self.low

    def default(self, defaults: Mapping[str, object]) -> float:
        """The method's own value, brought inside the range."""
        return min(max(float(defaults.get(self.name, self.low)), self.low), self.high)


@dataclass(frozen=True)
class SearchSpace:
    """A method's tuning space: ``lr`` (log-uniform), the trainer ``epochs`` tried (the first is the default
    schedule, the CPU trainer's 5), its main ``strength`` knob (how hard it forgets, beside the lr; None: none) and its other loss
    ``weights``. The default strength, the retain term's weight, reaches 10 and 30: a probe kept dispersion's retain
    mAP within 2 points of θ0's at 10, where 0 or 1 did not."""

    lr: LogUniform = LogUniform()
    strength: Knob | Range | None = Knob("retain_weight", (0.0, 1.0, 10.0, 30.0))
    weights: tuple[Knob | Range, ...] = ()
    epochs: tuple[int, ...] = (5, 3, 8)

    def __post_init__(self) -> None:
        if not self.epochs or any(int(e) != e or e < 1 for e in self.epochs):
            raise ConfigError(f"SearchSpace epochs must be whole numbers ≥ 1, got {self.epochs}")
        object.__setattr__(self, "epochs", tuple(int(e) for e in self.epochs))

    @property
    def knobs(self) -> tuple[Knob | Range, ...]:
        return (*([self.strength] if self.strength else []), *self.weights)

    def suggest(self, trial, defaults: Mapping[str, object]) -> dict:
        """One setting drawn from an Optuna ``trial``: ``lr`` (log-uniform over its bounds around the method's
        default), ``epochs`` and each knob (categorical, or over its ``Range``); ``defaults``: the method's."""
        low, high = self.lr.bounds(float(defaults["lr"]))
        setting = {"lr": trial.suggest_float("lr", low, high, log=True) if low < high else low}
        setting["epochs"] = trial.suggest_categorical("epochs", list(self.epochs)) if len(self.epochs) > 1 \
            else self.epochs[0]
        setting.update({k.name: k.suggest(trial) for k in self.knobs})
        return setting

    def describe(self, defaults: Mapping[str, object]) -> dict:
        """The space as searched from ``defaults`` (JSON-able): lr bounds, epochs, each knob's values or range."""
        knobs = {k.name: ({"low": k.low, "high": k.high, "log": k.log} if isinstance(k, Range) else list(k.values))
                 for k in self.knobs}
        return {"lr": list(self.lr.bounds(float(defaults["lr"]))), "epochs": list(self.epochs), **knobs}

    def default_setting(self, defaults: Mapping[str, object]) -> dict:
        """The method as it is configured (its lr brought inside the bounds, the first epochs, each knob's own
        value): the first trial of every tuning, so the chosen setting is never worse than the defaults."""
        low, high = self.lr.bounds(float(defaults["lr"]))
        return {"lr": min(max(float(defaults["lr"]), low), high), "epochs": self.epochs[0],
                **{k.name: k.default(defaults) for k in self.knobs}}

    def check(self, method: str, options: Mapping[str, object]) -> None:
        """Every knob must be one of the method's options (``options``: its init arguments and defaults)."""
        missing = sorted(({"lr"} | {k.name for k in self.knobs}) - set(options))
        if missing:
            raise ConfigError(f"{method}.tuning names {missing[0]!r}, which {method} does not take: tune one of its "
                              f"options ({', '.join(sorted(options))})")
