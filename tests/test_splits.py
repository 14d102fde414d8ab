"""Forget protocols: disjoint parts, determinism, manifests that round-trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.data.splits import make_split, read_manifest
from unlearnkit.errors import DataError


def _toy(n_ids=10, per=6):
    identities = [f"id{i:02d}" for i in range(n_ids) for _ in range(per)]
    keys = [f"{ident}/{j}.jpg" for j, ident in enumerate(identities)]
    quality = np.linspace(0, 1, len(keys))[::-1].copy()
    return keys, identities, quality


@pytest.mark.parametrize("protocol", ["identity", "sample", "quality"])
def test_every_image_in_exactly_one_part_and_deterministic(protocol):
    keys, ids, q = _toy()
    forget = 3 if protocol == "identity" else 0.2
    a = make_split(keys, ids, protocol, forget, heldout_per_identity=2, quality=q, seed=1)
    b = make_split(keys, ids, protocol, forget, heldout_per_identity=2, quality=q, seed=1)
    c = make_split(keys, ids, protocol, forget, heldout_per_identity=2, quality=q, seed=2)
    assert (a.parts == b.parts).all()
    assert (a.parts != c.parts).any()
    counts = a.counts()
    assert sum(counts.values()) == len(keys)
    assert counts["heldout"] == 2 * 10
    if protocol == "identity":
        forgotten = {ids[i] for i in a.indices("forget")}
        assert len(forgotten) == 3
        # no retain training image of a forgotten person
        assert not forgotten & {ids[i] for i in a.indices("retain")}
    else:
        assert counts["forget"] == round(0.2 * 40)
    if protocol == "quality":
        forget_q = q[a.indices("forget")]
        retain_q = q[a.indices("retain")]
        assert forget_q.max() <= retain_q.min()


def test_forget_list_and_unknown_identity():
    keys, ids, _ = _toy()
    split = make_split(keys, ids, "identity", forget_identities=["id01", "id04"], heldout_per_identity=1)
    assert split.forget_identities == ["id01", "id04"]
    with pytest.raises(DataError, match="not in the data set"):
        make_split(keys, ids, "identity", forget_identities=["nobody"])


@pytest.mark.parametrize("kwargs", [dict(forget_identities=[]), dict(forget=10), dict(forget=0)])
def test_empty_or_total_forget_sets_are_refused(kwargs):
    keys, ids, _ = _toy()
    with pytest.raises(DataError):
        make_split(keys, ids, "identity", **kwargs)


def test_manifest_round_trip(tmp_path):
    keys, ids, q = _toy()
    split = make_split(keys, ids, "quality", 0.25, quality=q, seed=3)
    path = split.write_manifest(tmp_path / "split.csv")
    back = read_manifest(path, keys, ids, "quality")
    assert (back.parts == split.parts).all()
    np.testing.assert_allclose(back.quality, split.quality, atol=1e-6)
    assert path.read_text().splitlines()[0] == "path,identity,split,quality"
    with pytest.raises(DataError, match="another data set"):
        read_manifest(path, keys + ["extra/1.jpg"], ids + ["extra"], "quality")


def test_datamodule_writes_manifest_and_serves_indices(tiny_faces, tmp_path):
    from conftest import tiny_datamodule

    dm = tiny_datamodule(tiny_faces)
    dm.setup("fit")
    indices, groups = dm.eval_groups()
    assert len(set(indices.tolist())) == len(indices)
    batch = next(iter(dm.eval_loader(indices, groups)))
    assert set(batch) == {"image", "label", "index", "group"}
    assert batch["image"].shape[1:] == (3, 32, 32)
    loader = dm.train_loader("forget", pk=True)
    labels = next(iter(loader))["label"]
    assert len(labels) == 12 and len(set(labels.tolist())) == 3  # P×K = 3 × 4


def test_forget_seed_redraws_forget_set_over_same_heldout():
    keys, ids, _ = _toy()
    a = make_split(keys, ids, "identity", 3, heldout_per_identity=2, seed=1)
    b = make_split(keys, ids, "identity", 3, heldout_per_identity=2, seed=1, forget_seed=5)
    assert (a.indices("heldout") == b.indices("heldout")).all()
    assert a.forget_identities != b.forget_identities


def test_quality_validation_split_forgets_the_next_band_never_the_evaluation_images():
    """The quality protocol's forget set is no draw: its validation split (``forget_seed`` 1) forgets the next k
    images up the quality order, so tuning never forgets the images the evaluation forgets."""
    keys, ids, _ = _toy()
    quality = np.random.default_rng(0).random(len(keys))
    evaluation = make_split(keys, ids, "quality", 0.2, heldout_per_identity=2, quality=quality, seed=1)
    validation = make_split(keys, ids, "quality", 0.2, heldout_per_identity=2, quality=quality, seed=1, forget_seed=1)
    assert (evaluation.indices("heldout") == validation.indices("heldout")).all()
    forget, other = evaluation.indices("forget"), validation.indices("forget")
    assert len(forget) == len(other) and not set(forget) & set(other)
    assert quality[other].min() >= quality[forget].max()  # the next band up the quality order
    with pytest.raises(DataError, match="forget_seed=9 asks for quality band 9"):
        make_split(keys, ids, "quality", 0.2, heldout_per_identity=2, quality=quality, seed=1, forget_seed=9)


def test_heldout_pairs_are_seeded_and_balanced(tiny_faces):
    from conftest import tiny_datamodule

    dm = tiny_datamodule(tiny_faces, pairs=[{"name": "heldout", "format": "heldout", "num_pairs": 40}])
    dm.setup()
    (pairs,) = dm.pair_sets
    assert len(pairs) == 40 and sum(pairs.issame) == 20
    heldout = dm.split.indices("heldout")
    for (i, j), same in zip(pairs.pairs, pairs.issame):
        assert i != j and (dm.labels[heldout[i]] == dm.labels[heldout[j]]) == same
    image = next(iter(dm.pair_loader(pairs)))["image"]
    assert image.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("protocol", ["identity", "sample", "quality"])
def test_unseen_people_are_never_trained_on_and_fixed_across_draws(protocol):
    keys, ids, q = _toy(n_ids=12)
    forget = 3 if protocol == "identity" else 0.2
    split = make_split(keys, ids, protocol, forget, heldout_per_identity=2, quality=q, seed=1, unseen=3)
    unseen = split.unseen_identities
    assert len(unseen) == 3
    for person in unseen:  # every image held out, none forgotten
        assert all(p == "heldout" for p, i in zip(split.parts, ids) if i == person)
    assert not set(unseen) & set(split.forget_identities)
    assert make_split(keys, ids, protocol, forget, heldout_per_identity=2, quality=q, seed=1).unseen_identities == []
    again = make_split(keys, ids, "identity", 2, heldout_per_identity=2, seed=1, forget_seed=4, unseen=3)
    assert again.unseen_identities == unseen


def test_unseen_people_cannot_be_everyone_or_forgotten():
    keys, ids, _ = _toy(n_ids=4)
    with pytest.raises(DataError, match="unseen"):
        make_split(keys, ids, "identity", 1, unseen=3)
    split = make_split(keys, ids, "identity", 1, unseen=1, seed=0)
    with pytest.raises(DataError, match="unseen person"):
        make_split(keys, ids, "identity", forget_identities=split.unseen_identities, unseen=1, seed=0)


def test_unseen_people_give_verification_on_unseen_pairs(tiny_faces, original_ckpt):
    """Issue 15, item 7: `verify/<set>/unseen/…` exists once some people are kept out of training."""
    from conftest import quiet_trainer, tiny_datamodule

    from unlearnkit.callbacks.evaluation import FaceEvaluation
    from unlearnkit.methods.gradient_ascent import GradientAscent

    dm = tiny_datamodule(tiny_faces, unseen_identities=4,
                         pairs=[{"name": "heldout", "format": "heldout", "num_pairs": 200}])
    evaluation = FaceEvaluation(plots=False, per_identity=False, mia=False)
    quiet_trainer(callbacks=[evaluation]).validate(GradientAscent(original=str(original_ckpt)), datamodule=dm)
    unseen = set(dm.split.unseen_identities)
    assert len(unseen) == 4
    evaluated = {dm.source.identities[i] for i in dm.eval_groups()[0]}
    assert not evaluated & unseen  # verification only: no unseen person among the retrieval queries
    assert {"verify/heldout/acc", "verify/heldout/unseen/acc", "verify/heldout/retained/acc"} <= set(evaluation.last)


def test_heldout_pairs_among_unseen_or_trained_people_only(tiny_faces):
    """`people: unseen` draws verification pairs among people never trained on, `trained` among the others;
    the pairs follow the seed, not the forget set, and a bad choice is one clear error."""
    from conftest import tiny_datamodule

    from unlearnkit.errors import ConfigError

    specs = [{"name": who, "format": "heldout", "num_pairs": 40, "people": who} for who in ("unseen", "trained")]
    dm = tiny_datamodule(tiny_faces, unseen_identities=4, pairs=specs)
    dm.setup()
    unseen = set(dm.split.unseen_identities)
    identity_of = dict(zip(dm.source.keys, dm.source.identities))
    heldout_keys = {dm.source.keys[i] for i in dm.split.indices("heldout")}
    for pair_set in dm.pair_sets:
        assert set(pair_set.keys) <= heldout_keys
        people = {identity_of[key] for key in pair_set.keys}
        assert people <= unseen if pair_set.name == "unseen" else not people & unseen
        assert len(pair_set) == 40 and sum(pair_set.issame) == 20
        for (i, j), same in zip(pair_set.pairs, pair_set.issame):
            assert (identity_of[pair_set.keys[i]] == identity_of[pair_set.keys[j]]) == same
    other = tiny_datamodule(tiny_faces, unseen_identities=4, pairs=specs, forget=2, forget_seed=3)
    other.setup()
    assert other.split.forget_identities != dm.split.forget_identities
    assert [(p.keys, p.pairs, p.issame) for p in other.pair_sets] == [(p.keys, p.pairs, p.issame) for p in dm.pair_sets]
    with pytest.raises(DataError, match="unseen_identities"):
        tiny_datamodule(tiny_faces, pairs=specs[:1]).setup()
    with pytest.raises(ConfigError, match="people must be one of"):
        tiny_datamodule(tiny_faces, pairs=[{**specs[0], "people": "everyone"}]).setup()
