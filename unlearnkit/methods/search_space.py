"""What the study tunes for a method: its declared search space (``tuning`` on the method's class).

The study gives every method the same budget of settings and keeps the best by UES on a validation forget set
(``benchmarks/study.py``). The settings come from the method's ``SearchSpace`` in a fixed order: its defaults,
the learning rate at the top and the bottom of its log-uniform range, each other value of its strength knob and of
its other loss weights, then learning rates halfway (on the log scale) between those already tried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from unlearnkit.errors import ConfigError


@dataclass(frozen=True)
class LogUniform:
    """A positive option searched on a log scale over [low, high]; a bound left unset lies ``decades`` decades
    from the option's default (the default range: a decade either side, where the probes found runaway
    thresholds)."""

    low: float | None = None
    high: float | None = None
    decades: float = 1.0

    def __post_init__(self) -> None:
        if any(b is not None and b <= 0 for b in (self.low, self.high)) or self.decades < 0:
            raise ConfigError(f"LogUniform needs positive bounds and decades ≥ 0, got {self}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ConfigError(f"LogUniform low {self.low} is above high {self.high}")

    def bounds(self, default: float) -> tuple[float, float]:
        low = default / 10**self.decades if self.low is None else self.low
        high = default * 10**self.decades if self.high is None else self.high
        return low, high

    def values(self, default: float, count: int) -> list[float]:
        """``count`` values at most: the default, the top, the bottom, then log-midpoints of neighbours."""
        low, high = self.bounds(default)
        out = _unique([default, high, low])
        while len(out) < count:
            ordered = sorted(out)
            midpoints = [v for v in (math.sqrt(a * b) for a, b in zip(ordered, ordered[1:])) if v not in out]
            if not midpoints:
                break
            out += midpoints
        return out[:count]


@dataclass(frozen=True)
class Knob:
    """One option of the method and the values the study tries, the first in every setting unless it varies."""

    name: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError(f"Knob {self.name!r} has no values: give at least its default")
        object.__setattr__(self, "values", tuple(self.values))


@dataclass(frozen=True)
class SearchSpace:
    """A method's tuning space: ``lr`` (log-uniform), its main ``strength`` knob (how hard it forgets; None: none)
    and its other loss ``weights``."""

    lr: LogUniform = LogUniform()
    strength: Knob | None = Knob("retain_weight", (0.0, 1.0))
    weights: tuple[Knob, ...] = ()

    @property
    def knobs(self) -> tuple[Knob, ...]:
        return (*([self.strength] if self.strength else []), *self.weights)

    def check(self, method: str, options: Mapping[str, object]) -> None:
        """Every knob must be one of the method's options (``options``: its init arguments and defaults)."""
        missing = sorted(({"lr"} | {k.name for k in self.knobs}) - set(options))
        if missing:
            raise ConfigError(f"{method}.tuning names {missing[0]!r}, which {method} does not take: tune one of its "
                              f"options ({', '.join(sorted(options))})")

    def settings(self, defaults: Mapping[str, object], budget: int) -> list[dict]:
        """``budget`` settings (option → value) in the study's fixed order; ``defaults``: the method's defaults."""
        lr = float(defaults["lr"])
        base = {"lr": lr, **{k.name: k.values[0] for k in self.knobs}}
        rates = self.lr.values(lr, 3)
        grid = [{**base, "lr": v} for v in rates]
        grid += [{**base, k.name: v} for k in self.knobs for v in k.values[1:]]
        if len(grid) < budget:  # more learning rates: log-midpoints of those already in the grid
            grid += [{**base, "lr": v} for v in self.lr.values(lr, len(rates) + budget - len(grid))[len(rates):]]
        return grid[:budget]


def _unique(values: list[float]) -> list[float]:
    return [v for i, v in enumerate(values) if v not in values[:i]]
