"""The protocol vocabulary: forget protocols, split parts, evaluation groups and what each group is for.

Data (splits, the evaluation set), metrics, callbacks and the report read these names from here, so a
protocol's meaning is written down once. SPEC §1 defines three protocols: ``identity`` forgets whole people;
``sample`` and ``quality`` forget training images of people who stay (random ones, or the lowest-quality ones).
"""

from __future__ import annotations

import numpy as np

PROTOCOLS = ("identity", "sample", "quality")

# Every image of a data set is in one part of a split: D_f, D_r, or kept out of training.
PARTS = ("forget", "retain", "heldout")

# Groups of the retrieval evaluation set (the ``group`` code of each evaluation sample): training images of
# D_f and D_r, and held-out images of forgotten people (identity protocol only) and of everyone else.
EVAL_GROUPS = {0: "forget_train", 1: "retain_train", 2: "forget_test", 3: "retain_test"}
GROUP_ID = {name: code for code, name in EVAL_GROUPS.items()}

# Who a verification image shows relative to the split (``pair_people``); utility is read on the
# pairs of ``UTILITY_PEOPLE`` only, never on forgotten people.
PEOPLE = ("forgotten", "retained", "unseen", "unknown")
UTILITY_PEOPLE = ("retained", "unseen")

# The metrics each protocol's verdicts rest on (docs/metrics.md; ``is_headline``), marked ★ in the report. In
# the identity protocol the oracle is not the target; in the others, looking like the oracle is.
HEADLINE_METRICS = {
    "identity": ("forget/mAP", "forget/R@1", "forget/CS", "retain/mAP"),
    "sample": ("oracle_gap/forget/mAP", "oracle_gap/retain_heldout/mAP", "oracle_gap/memorisation/mAP",
               "oracle_gap/mia/forget_auc", "memorisation/mAP", "retain_heldout/mAP"),
}
HEADLINE_METRICS["quality"] = HEADLINE_METRICS["sample"]


def forgets_people(protocol: str) -> bool:
    """Whether the protocol forgets whole people (``identity``) rather than images of people who stay."""
    return protocol == "identity"


def is_headline(key: str, protocol: str) -> bool:
    """Whether ``key`` is one of the metrics ``protocol``'s verdicts rest on: ``HEADLINE_METRICS`` and, in the
    identity protocol, verification on retained and on unseen people's pairs."""
    if forgets_people(protocol) and key.startswith("verify/") and key.endswith(("/retained/acc", "/unseen/acc")):
        return True
    return key in HEADLINE_METRICS.get(protocol, ())


def query_groups(protocol: str) -> dict[str, str]:
    """Which evaluation group is the forget and the retain query set (their union is the gallery).

    Identity protocol: held-out images of forgotten vs retained people ("can this person still be found?").
    Sample and quality protocols: the forgotten training images themselves vs retain training images.
    """
    if forgets_people(protocol):
        return {"forget": "forget_test", "retain": "retain_test"}
    return {"forget": "forget_train", "retain": "retain_train"}


def pair_people(datamodule, pair_set) -> np.ndarray:
    """Who each image of ``pair_set`` shows, relative to the run's split (one of ``PEOPLE``).

    ``forgotten``: a forgotten person of the identity protocol; ``retained``: a person with training images
    who is not forgotten; ``unseen``: a person of the data set without any training image; ``unknown``: an
    image from outside the data set (e.g. an external benchmark), matched by image key.
    """
    split, source = datamodule.split, datamodule.source
    identity_of = dict(zip(source.keys, source.identities))
    trained = {source.identities[i] for i in split.indices("train")}
    forgotten = set(split.forget_identities) if forgets_people(split.protocol) else set()
    out = []
    for key in pair_set.keys:
        person = identity_of.get(key)
        if person is None:
            out.append("unknown")
        elif person in forgotten:
            out.append("forgotten")
        else:
            out.append("retained" if person in trained else "unseen")
    return np.array(out)
