"""The metric suite: SPEC §3 over gathered embeddings, as a registry of plain functions; no Trainer needed.

A metric is a function ``fn(ev, ctx) -> {key: value}`` of one model's gathered embeddings (``EvalEmbeddings``)
and a ``Context`` (protocol, settings, pair sets, θ0's and the oracle's embeddings and values), registered
with the key prefixes it writes and what it needs. ``evaluate`` runs every registered metric (in
registration order, those that read other metrics' values last) for each subject that has what it needs:

- the model itself (keys as the metric returns them), against θ0 and the oracle;
- θ0 (``original/…``), against nothing;
- the retrain oracle (``oracle/…``), against θ0; metrics that need the oracle skip it (no gap to itself),
  and its UES under ``ues_reference: oracle`` reads its own values;
- the noise baseline (``noise/…``): θ0's embeddings plus isotropic noise of the model's drift, against both.

So a new metric is one function and one ``register`` call, and its keys appear for all four subjects, in
the logs, ``metrics.json``, ``evaluation.json`` and the report's CSV.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from unlearnkit.metrics.audit import example_statistic, ks_forget_quality
from unlearnkit.metrics.collector import EvalEmbeddings
from unlearnkit.metrics.measures import (
    drift,
    heldout_metrics,
    matched_noise,
    membership_metrics,
    oracle_gaps,
    retrieval_metrics,
    ues_metrics,
    verification_metrics,
)
from unlearnkit.protocols import PROTOCOLS

SUBJECTS = ("original", "oracle", "noise")  # key prefixes of θ0, the oracle and the noise baseline
NEEDS = ("pairs", "original", "oracle")  # what a metric may need: pair sets, θ0, the retrain oracle


@dataclass(frozen=True)
class Settings:
    """The evaluation's options (``FaceEvaluation``'s init args of the same names)."""

    ks: tuple[int, ...] = (1, 5)
    far: float = 1e-3
    folds: int = 10
    ues_metric: str = "mAP"
    ues_reference: str = "original"
    mia: bool = True
    noise_baseline: bool = True
    seed: int = 0


@dataclass
class Scored:
    """A model as a reference: its gathered embeddings and the suite's values for it (unprefixed)."""

    embeddings: EvalEmbeddings
    values: dict[str, float]


@dataclass
class Context:
    """What a metric may read besides the subject's embeddings.

    ``pair_sets``: the verification pair sets (``name``, ``pairs``, ``issame``), whose images' embeddings are
    ``ev.pairs[name]``; ``people``: ``protocols.pair_people`` of each set; ``original`` / ``oracle``: θ0 and
    the oracle where known (``None`` otherwise); ``values``: the subject's values computed so far (every
    other metric's, for a metric registered with ``reads_values``).
    """

    protocol: str
    settings: Settings = field(default_factory=Settings)
    pair_sets: Sequence = ()
    people: Mapping[str, np.ndarray] = field(default_factory=dict)
    original: Scored | None = None
    oracle: Scored | None = None
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, the key prefixes it writes, and when it runs."""

    name: str
    fn: Callable[[EvalEmbeddings, Context], Mapping[str, float]]
    keys: tuple[str, ...]
    needs: frozenset[str] = frozenset()
    protocols: tuple[str, ...] = PROTOCOLS
    option: str | None = None  # a boolean ``Settings`` field that switches it off
    reads_values: bool = False  # reads the subject's other values: runs after those that do not

    def owns(self, key: str) -> bool:
        return any(_covers(prefix, key) for prefix in self.keys)

    def applies(self, ctx: Context, skip: frozenset[str] = frozenset()) -> bool:
        available = {"pairs": bool(ctx.pair_sets), "original": ctx.original is not None,
                     "oracle": ctx.oracle is not None}
        return (ctx.protocol in self.protocols and not (self.needs & skip)
                and all(available[need] for need in self.needs)
                and (self.option is None or bool(getattr(ctx.settings, self.option))))


REGISTRY: dict[str, Metric] = {}


def _covers(prefix: str, key: str) -> bool:
    return key == prefix or key.startswith(prefix + "/")


def register(name: str, fn: Callable | None = None, *, keys: Sequence[str], needs: Sequence[str] = (),
             protocols: Sequence[str] = PROTOCOLS, option: str | None = None, reads_values: bool = False):
    """Add a metric to the suite; as a decorator, ``@register("name", keys=("prefix",))``.

    ``keys``: the prefixes of every key ``fn`` returns (``"drift"`` covers ``drift`` and ``drift/…``), disjoint
    from every other metric's and from the subjects' (``original``, ``oracle``, ``noise``). ``needs``: any of
    ``pairs``, ``original``, ``oracle``; the metric is skipped for a subject without them. ``protocols``: where
    it runs. ``option``: a boolean ``Settings`` field that turns it off. ``reads_values``: it reads the
    subject's other values (``ctx.values``), so it runs after every metric that does not.
    """
    if fn is None:
        def decorator(f):
            register(name, f, keys=keys, needs=needs, protocols=protocols, option=option, reads_values=reads_values)
            return f
        return decorator
    keys, needs, protocols = tuple(keys), frozenset(needs), tuple(protocols)
    if name in REGISTRY:
        raise ValueError(f"metric {name!r} is already registered: pick another name or unregister it first")
    if not keys:
        raise ValueError(f"metric {name!r} declares no key prefix: give keys=(...)")
    if needs - set(NEEDS) or set(protocols) - set(PROTOCOLS):
        raise ValueError(f"metric {name!r}: needs must be among {NEEDS} and protocols among {PROTOCOLS}, "
                         f"got needs={sorted(needs)}, protocols={protocols}")
    if option is not None and not isinstance(getattr(Settings(), option, None), bool):
        raise ValueError(f"metric {name!r}: option {option!r} is not a boolean Settings field")
    taken = [(p, "a subject") for p in SUBJECTS]
    taken += [(p, f"metric {other!r}") for other, metric in REGISTRY.items() for p in metric.keys]
    for prefix in keys:
        for p, owner in taken:
            if _covers(p, prefix) or _covers(prefix, p):
                raise ValueError(f"metric {name!r}: key prefix {prefix!r} overlaps {p!r} of {owner}: "
                                 "choose a prefix of its own")
    REGISTRY[name] = Metric(name, fn, keys, needs, protocols, option, reads_values)
    return REGISTRY[name]


def unregister(name: str) -> Metric:
    """Remove a metric from the suite (and return it)."""
    return REGISTRY.pop(name)


def key_prefixes() -> tuple[str, ...]:
    """Every top-level key prefix the suite can write: the subjects' and each registered metric's."""
    return tuple(dict.fromkeys([*SUBJECTS, *(p.split("/")[0] for m in REGISTRY.values() for p in m.keys)]))


def score(ev: EvalEmbeddings, ctx: Context, skip: frozenset[str] = frozenset(),
          values: dict[str, float] | None = None) -> dict[str, float]:
    """One subject's values (unprefixed): every registered metric that applies, in registration order, those
    that read other values (``reads_values``) after the others.

    ``skip``: needs whose metrics are left out (the oracle's own gap); ``values``: the dict to fill (the
    oracle's, which its ``ctx.oracle`` already points to).
    """
    values = {} if values is None else values
    ctx = dataclasses.replace(ctx, values=values)
    ordered = sorted(REGISTRY.values(), key=lambda m: m.reads_values)  # stable: registration order within
    for metric in ordered:
        if not metric.applies(ctx, skip):
            continue
        out = metric.fn(ev, ctx)
        stray = [k for k in out if not metric.owns(k)]
        if stray:
            raise ValueError(f"metric {metric.name!r} returned {stray[0]!r}, outside its key prefixes "
                             f"{metric.keys}: declare the prefix in register(keys=...)")
        values.update(out)
    return values


def score_original(ev: EvalEmbeddings, ctx: Context) -> Scored:
    """θ0 as the reference of the other subjects: scored against nothing."""
    return Scored(ev, score(ev, dataclasses.replace(ctx, original=None, oracle=None)))


def score_oracle(ev: EvalEmbeddings, ctx: Context) -> Scored:
    """The retrain oracle as a reference: scored against θ0 (``ctx.original``, if known) and itself."""
    scored = Scored(ev, {})
    score(ev, dataclasses.replace(ctx, oracle=scored), skip=frozenset({"oracle"}), values=scored.values)
    return scored


def prefixed(subject: str, values: Mapping[str, float]) -> dict[str, float]:
    return {f"{subject}/{k}": v for k, v in values.items()}


def evaluate(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    """The model's values, then ``original/…``, ``oracle/…`` and ``noise/…`` where ``ctx`` has them.

    ``ctx.original`` / ``ctx.oracle`` come from ``score_original`` / ``score_oracle`` (computed once per run
    and reused every epoch); the noise baseline is drawn afresh for the model's drift.
    """
    out = score(ev, ctx)
    if ctx.original is not None:
        out.update(prefixed("original", ctx.original.values))
    if ctx.oracle is not None:
        out.update(prefixed("oracle", ctx.oracle.values))
    if ctx.original is not None and ctx.settings.noise_baseline:
        noisy = matched_noise(ctx.original.embeddings, drift(ev, ctx.original.embeddings), ctx.settings.seed)
        out.update(prefixed("noise", score(noisy, ctx)))
    return out


# ------------------------------------------------------------------------------------ SPEC §3, registered
def _retrieval(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    return retrieval_metrics(ev, ctx.protocol, ctx.settings.ks)


def _heldout(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    return heldout_metrics(ev, ctx.settings.ks)


def _verification(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    return verification_metrics(ev, ctx.pair_sets, ctx.settings.far, ctx.settings.folds, ctx.people)


def _membership(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    return membership_metrics(ev, ctx.settings.seed)


def _drift(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    return {"drift": drift(ev, ctx.original.embeddings)}


def _ues(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    oracle = ctx.oracle.values if ctx.oracle is not None else None
    return ues_metrics(ctx.values, ctx.original.values, oracle, ctx.settings.ues_metric, ctx.settings.ues_reference)


def _oracle_gap(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    return oracle_gaps(ctx.values, ctx.oracle.values)


def _forget_quality(ev: EvalEmbeddings, ctx: Context) -> dict[str, float]:
    """KS test of the per-example audit statistic on the forget training images, this model vs the oracle."""
    def statistic(e: EvalEmbeddings):
        return example_statistic(e.retrieval["embeddings"], e.retrieval["labels"], e.group("forget_train"))

    result = ks_forget_quality(statistic(ev), statistic(ctx.oracle.embeddings))
    return {f"forget_quality/ks_{k.removesuffix('_value')}": v for k, v in result.items()}


register("retrieval", _retrieval, keys=("forget", "retain"))
register("heldout", _heldout, keys=("retain_heldout", "memorisation"), protocols=("sample", "quality"))
register("verification", _verification, keys=("verify",), needs=("pairs",))
register("membership", _membership, keys=("mia",), option="mia")
register("drift", _drift, keys=("drift",), needs=("original",))
register("ues", _ues, keys=("UES",), needs=("original",), reads_values=True)
register("oracle_gap", _oracle_gap, keys=("oracle_gap",), needs=("oracle",), reads_values=True)
register("forget_quality", _forget_quality, keys=("forget_quality",), needs=("oracle",))
