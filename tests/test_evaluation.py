"""The evaluation callback: its values equal the functional metrics on the embeddings it saved, θ0 and the
oracle are embedded once per run, UES follows its formula, the attack separates what is separable and
nothing else, and the run's files and W&B media are written."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ARCH, pretrain_cli_args, quiet_trainer, tiny_datamodule

from unlearnkit.callbacks import evaluation as E
from unlearnkit.callbacks.evaluation import FaceEvaluation
from unlearnkit.callbacks.run_files import RunSummary
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import functional as MF
from unlearnkit.metrics import measures as M
from unlearnkit.metrics import suite
from unlearnkit.metrics.collector import EvalEmbeddings
from unlearnkit.metrics.measures import membership_metrics, ues_metrics
from unlearnkit.protocols import GROUP_ID, pair_people, query_groups

# ------------------------------------------------------------------------------------------------ UES


def test_ues_against_the_original_on_hand_made_cases():
    original = {"forget/mAP": 0.8, "retain/mAP": 0.8}
    r = ues_metrics({"forget/mAP": 0.2, "retain/mAP": 0.72}, original)
    assert r["UES/F"] == pytest.approx(0.75) and r["UES/R"] == pytest.approx(0.9)
    assert r["UES"] == pytest.approx(2 * 0.75 * 0.9 / 1.65)
    # forgetting past zero is clipped to 1; retain drift upwards is penalised like drift downwards
    r = ues_metrics({"forget/mAP": 0.0, "retain/mAP": 0.9}, original)
    assert (r["UES/F"], r["UES/R"]) == pytest.approx((1.0, 0.875))
    # nothing forgotten: F = 0 so UES = 0 however well retained
    assert ues_metrics({"forget/mAP": 0.9, "retain/mAP": 0.8}, original)["UES"] == 0.0
    # the metric is an option: CS keys are read
    r = ues_metrics({"forget/CS": 0.3, "retain/CS": 0.6}, {"forget/CS": 0.6, "retain/CS": 0.6}, metric="CS")
    assert (r["UES/F"], r["UES/R"], r["UES"]) == pytest.approx((0.5, 1.0, 2 / 3))


def test_ues_against_the_oracle_on_hand_made_cases():
    original = {"forget/mAP": 0.8, "retain/mAP": 0.8}
    oracle = {"forget/mAP": 0.3, "retain/mAP": 0.7}
    r = ues_metrics({"forget/mAP": 0.4, "retain/mAP": 0.63}, original, oracle, reference="oracle")
    assert (r["UES/F"], r["UES/R"]) == pytest.approx((0.8, 0.9))
    assert r["UES"] == pytest.approx(2 * 0.72 / 1.7)
    assert ues_metrics(oracle, original, oracle, reference="oracle")["UES"] == pytest.approx(1.0)
    # forgetting more than the oracle is a gap too (issue 15): 0.2 below it scores F = 1 − 0.2 / 0.5
    r = ues_metrics({"forget/mAP": 0.1, "retain/mAP": 0.7}, original, oracle, reference="oracle")
    assert (r["UES/F"], r["UES/R"]) == pytest.approx((0.6, 1.0))
    assert ues_metrics({"forget/mAP": 0.0, "retain/mAP": 0.7}, original, {"forget/mAP": 0.8, "retain/mAP": 0.7},
                       reference="oracle")["UES/F"] == 0.0  # the oracle forgets nothing: only its value is right
    assert np.isnan(ues_metrics(oracle, original, None, reference="oracle")["UES"])


def test_bad_ues_options_are_config_errors():
    with pytest.raises(ConfigError, match="ues_metric"):
        FaceEvaluation(ues_metric="R@10")
    with pytest.raises(ConfigError, match="oracle"):
        FaceEvaluation(ues_reference="oracle")
    with pytest.raises(ConfigError, match="ues_reference"):
        FaceEvaluation(ues_reference="teacher", oracle="x.ckpt")


# ------------------------------------------------------------------------------------------------ MIA


def _mia_set(member_noise: float, heldout_noise: float, forget_noise: float, per_identity: int = 40,
             seed: int = 0) -> EvalEmbeddings:
    """Eight identities around random centres; their retain training, held-out and forget training images at
    their own noise levels (forgotten images of people who stay, as in the sample protocol)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(8, 32, generator=g), dim=1)
    parts = [("retain_train", range(8), member_noise), ("retain_test", range(8), heldout_noise),
             ("forget_train", range(8), forget_noise)]
    z, labels, groups = [], [], []
    for group, identities, noise in parts:
        for label in identities:
            z.append(centres[label] + noise * torch.randn(per_identity, 32, generator=g) / 32 ** 0.5)
            labels += [label] * per_identity
            groups += [GROUP_ID[group]] * per_identity
    z = torch.cat(z)
    return EvalEmbeddings({"embeddings": F.normalize(z, dim=1), "labels": torch.tensor(labels),
                           "ids": torch.arange(len(z)), "groups": torch.tensor(groups)})


def _one_distribution(seed: int, identities: int = 100, per_group=(6, 4, 4), collapsed: bool = False):
    """The sample protocol without memorisation: every person's retain training, held-out and forget training
    images drawn alike (few images per person, as in face sets); ``collapsed`` squeezes them together."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(identities, 32, generator=g), dim=1)
    z, labels, groups = [], [], []
    for group, n in zip(("retain_train", "retain_test", "forget_train"), per_group):
        z.append(centres.repeat_interleave(n, 0) + torch.randn(identities * n, 32, generator=g) / 32 ** 0.5)
        labels.append(torch.arange(identities).repeat_interleave(n))
        groups += [GROUP_ID[group]] * (identities * n)
    z = torch.cat(z)
    if collapsed:
        z = 1.0 + 0.01 * z
    return EvalEmbeddings({"embeddings": F.normalize(z, dim=1), "labels": torch.cat(labels),
                           "ids": torch.arange(len(z)), "groups": torch.tensor(groups)})


def test_mia_separable_case_calls_forget_samples_members():
    r = membership_metrics(_mia_set(member_noise=0.1, heldout_noise=1.5, forget_noise=0.1))
    assert r["mia/attack_acc"] > 0.95 and r["mia/attack_fpr"] < 0.05
    assert r["mia/membership_recall"] > 0.95 and r["mia/forget_auc"] > 0.95


@pytest.mark.parametrize("collapsed", [False, True])
def test_mia_scores_chance_when_members_and_nonmembers_are_drawn_alike(collapsed):
    """No memorisation at all: the attack must be useless (issue 15, bug 3: a member inside its own centroid
    and forget images in the reference set gave attack AUC ≈ 0.9 here)."""
    runs = [membership_metrics(_one_distribution(seed, collapsed=collapsed), seed=seed) for seed in range(3)]
    mean = {k: np.mean([r[k] for r in runs]) for k in runs[0]}
    assert abs(mean["mia/attack_auc"] - 0.5) < 0.05, mean
    assert abs(mean["mia/forget_auc"] - 0.5) < 0.05, mean
    assert abs(mean["mia/attack_acc"] - 0.5) < 0.05, mean
    assert abs(mean["mia/membership_recall"] - mean["mia/attack_fpr"]) < 0.1, mean


def _uneven_people(seed: int, identities: int = 60, heldout: int = 3, forget: float = 0.15):
    """The sample protocol without memorisation on a face set with uneven people (LFW, Pins): 3 to 60 training
    images a person, a fixed few held out each, the forget images a random share of all training images, so
    mostly of the people with many images. Every image of a person is drawn alike."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    centres = F.normalize(torch.randn(identities, 32, generator=g), dim=1)
    sizes = np.round(np.geomspace(3, 60, identities)).astype(int)
    train_labels = np.repeat(np.arange(identities), sizes)
    forgotten = rng.random(len(train_labels)) < forget
    labels = np.r_[train_labels, np.repeat(np.arange(identities), heldout)]
    groups = np.r_[np.where(forgotten, GROUP_ID["forget_train"], GROUP_ID["retain_train"]),
                   np.full(identities * heldout, GROUP_ID["retain_test"])]
    labels = torch.from_numpy(labels)
    z = centres[labels] + 1.2 * torch.randn(len(labels), 32, generator=g) / 32 ** 0.5
    return EvalEmbeddings({"embeddings": F.normalize(z, dim=1), "labels": labels, "ids": torch.arange(len(z)),
                           "groups": torch.from_numpy(groups)})


def test_mia_scores_chance_on_uneven_people_drawn_alike():
    """The forget draw comes mostly from people with many images, the held-out images from everyone alike: an
    attack comparing the two groups as wholes tells large people from small ones, not members from non-members
    (an oracle scored 0.72 on LFW). Compared person by person, it scores chance."""
    runs = [membership_metrics(_uneven_people(seed), seed=seed) for seed in range(4)]
    mean = {k: np.mean([r[k] for r in runs]) for k in runs[0]}
    assert abs(mean["mia/forget_auc"] - 0.5) < 0.05, mean
    assert abs(mean["mia/attack_auc"] - 0.5) < 0.05, mean
    assert abs(mean["mia/membership_recall"] - mean["mia/attack_fpr"]) < 0.1, mean


# ------------------------------------------------------------------------------------ the callback in a run


def _pair_file(tiny_faces: Path, out: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for n in range(40):
        a = int(rng.integers(12))
        b = a if n % 2 == 0 else int((a + 1 + rng.integers(11)) % 12)
        i, j = rng.choice(8, 2, replace=False)
        lines.append(f"id{a:05d}/{i:03d}.jpg\tid{b:05d}/{j:03d}.jpg\t{int(a == b)}")
    path = out / "tinypairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _datamodule(tiny_faces, pairs: Path):
    return tiny_datamodule(tiny_faces, pairs=[{"name": "tiny", "format": "list", "path": str(pairs),
                                              "image_root": str(tiny_faces)}])


@pytest.fixture(scope="module")
def oracle_ckpt(tiny_faces, tmp_path_factory) -> Path:
    """A (very briefly) retrained oracle."""
    from unlearnkit.methods.base import Retrain

    L.seed_everything(1)
    out = tmp_path_factory.mktemp("oracle")
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, default_root_dir=str(out))
    trainer.fit(Retrain(**ARCH, lr=0.05), datamodule=tiny_datamodule(tiny_faces))
    trainer.save_checkpoint(out / "oracle.ckpt")
    return out / "oracle.ckpt"


@pytest.fixture(scope="module")
def unlearn_run(tiny_faces, original_ckpt, oracle_ckpt, tmp_path_factory):
    """Two epochs of gradient ascent with the full evaluation, W&B offline; counts reference embeddings."""
    from lightning.pytorch.loggers import WandbLogger

    from unlearnkit.methods.gradient_ascent import GradientAscent

    run_dir = tmp_path_factory.mktemp("run")
    calls = []
    embed_sets = E.embed_sets
    E.embed_sets = lambda *a, **k: calls.append(1) or embed_sets(*a, **k)
    try:
        L.seed_everything(0)
        model = GradientAscent(original=str(original_ckpt), lr=0.02)
        dm = _datamodule(tiny_faces, _pair_file(tiny_faces, run_dir))
        callback = FaceEvaluation(ks=(1, 5), oracle=str(oracle_ckpt), save_embeddings=True)
        logger = WandbLogger(save_dir=str(run_dir), offline=True, project="unlearnkit-tests")
        trainer = quiet_trainer(max_epochs=2, limit_train_batches=1, default_root_dir=str(run_dir), logger=logger,
                                callbacks=[callback, RunSummary()])
        trainer.fit(model, datamodule=dm)
        logger.experiment.finish()
    finally:
        E.embed_sets = embed_sets
    logged = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    metrics = json.loads((run_dir / "evaluation.json").read_text())["metrics"]  # float64, as computed
    return dict(run_dir=run_dir, model=model, dm=dm, callback=callback, metrics=metrics, logged=logged,
                reference_calls=len(calls))


def test_run_logs_every_metric_and_references_once(unlearn_run):
    m, logged = unlearn_run["metrics"], unlearn_run["logged"]
    assert all(logged[k] == pytest.approx(v, rel=1e-6, abs=1e-7) for k, v in m.items() if np.isfinite(v))
    for part in ("forget", "retain"):
        for metric in ("mAP", "R@1", "R@5", "CS"):
            for prefix in ("", "original/", "oracle/"):
                assert np.isfinite(m[f"{prefix}{part}/{metric}"])
            assert f"oracle_gap/{part}/{metric}" in m
    for key in ("verify/tiny/acc", "verify/tiny/tar@far=1e-3", "UES", "UES/F", "UES/R", "oracle/UES",
                "mia/membership_recall", "mia/attack_acc", "mia/attack_fpr", "mia/forget_auc",
                "original/mia/membership_recall",
                "oracle/mia/membership_recall"):
        assert key in m, key
    assert "cost/wall_seconds" in logged
    # issue 15: utility on retained people's pairs, the drift from θ0 and the noise baseline at that drift
    for key in ("verify/tiny/retained/acc", "drift", "oracle/drift", "noise/forget/mAP", "noise/UES",
                "noise/mia/attack_auc", "noise/oracle_gap/forget/mAP", "noise/verify/tiny/retained/acc"):
        assert key in m and np.isfinite(m[key]), key
    # identity protocol: the forgotten people have no retained held-out image to be compared with, person by person
    assert np.isnan(m["mia/forget_auc"]) and np.isnan(m["noise/mia/forget_auc"])
    assert m["noise/drift"] == pytest.approx(m["drift"], abs=1e-6) and m["drift"] > 0
    assert not any(k.startswith("memorisation/") for k in m), "identity protocol: no memorisation gap"
    assert unlearn_run["reference_calls"] == 2, "θ0 and the oracle must be embedded once per run, not per epoch"
    assert m["UES"] == pytest.approx(ues_metrics(m, {k[9:]: v for k, v in m.items() if k.startswith("original/")})["UES"])
    for key in ("forget/mAP", "retain/R@1", "mia/membership_recall", "verify/tiny/acc"):
        assert m[f"oracle_gap/{key}"] == pytest.approx(abs(m[key] - m[f"oracle/{key}"]))


def test_values_equal_the_functional_metrics_on_the_saved_embeddings(unlearn_run):
    m, dm = unlearn_run["metrics"], unlearn_run["dm"]
    saved = torch.load(unlearn_run["run_dir"] / "embeddings.pt", weights_only=True)
    assert set(saved) == {"before", "after", "oracle"}
    pairs = dm.pair_sets[0]
    ij = torch.as_tensor(pairs.pairs)
    for role, prefix in (("after", ""), ("before", "original/"), ("oracle", "oracle/")):
        data, z_pairs = saved[role]["retrieval"], saved[role]["pairs"]["tiny"]
        groups = data["groups"]
        for part, code in (("forget", GROUP_ID["forget_test"]), ("retain", GROUP_ID["retain_test"])):
            gallery = (groups == GROUP_ID["forget_test"]) | (groups == GROUP_ID["retain_test"])
            r = MF.retrieval(data["embeddings"], data["labels"], ks=(1, 5), query_mask=groups == code,
                             gallery_mask=gallery)
            assert m[f"{prefix}{part}/mAP"] == pytest.approx(r["mAP"], abs=1e-9)
            assert m[f"{prefix}{part}/R@5"] == pytest.approx(r["R@5"], abs=1e-9)
            cs = MF.compactness(data["embeddings"][groups == code], data["labels"][groups == code])
            assert m[f"{prefix}{part}/CS"] == pytest.approx(cs, abs=1e-6)
        v = MF.verification(z_pairs[ij[:, 0]], z_pairs[ij[:, 1]], pairs.issame)
        assert m[f"{prefix}verify/tiny/acc"] == pytest.approx(v["acc"], abs=1e-9)
        reference = groups == GROUP_ID["retain_train"]  # never a forget image

        def features(code, data=data, reference=reference):
            s = data["groups"] == code
            return MF.mia_features(data["embeddings"][s], data["labels"][s], data["embeddings"][reference],
                                   data["labels"][reference], data["ids"][s], data["ids"][reference])

        people = {code: data["labels"][data["groups"] == code] for code in GROUP_ID.values()}
        mia = MF.membership_inference(features(GROUP_ID["retain_train"]), features(GROUP_ID["retain_test"]),
                                      features(GROUP_ID["forget_train"]), member_groups=people[GROUP_ID["retain_train"]],
                                      nonmember_groups=people[GROUP_ID["retain_test"]],
                                      target_groups=people[GROUP_ID["forget_train"]])
        assert m[f"{prefix}mia/membership_recall"] == pytest.approx(mia["membership_recall"], abs=1e-9)
        for key in ("attack_acc", "attack_fpr", "forget_auc"):
            assert m[f"{prefix}mia/{key}"] == pytest.approx(mia[key], abs=1e-9, nan_ok=True)  # forget_auc: NaN here


def test_saved_embeddings_are_the_models_once_per_sample(unlearn_run):
    """The gathered set is the whole evaluation set once, in id order, and equals a direct forward pass."""
    model, dm = unlearn_run["model"], unlearn_run["dm"]
    saved = torch.load(unlearn_run["run_dir"] / "embeddings.pt", weights_only=True)["after"]["retrieval"]
    indices, groups = dm.eval_groups()
    order = np.argsort(indices)
    assert saved["ids"].tolist() == indices[order].tolist()
    assert saved["groups"].tolist() == groups[order].tolist()
    model.eval()
    with torch.no_grad():
        z = torch.cat([F.normalize(model.backbone(b["image"]), dim=1)
                       for b in dm.eval_loader(indices[order], shard=False)])
    assert torch.allclose(saved["embeddings"], z, atol=1e-5)


def test_per_identity_table_and_plots(unlearn_run):
    run_dir, m, dm = unlearn_run["run_dir"], unlearn_run["metrics"], unlearn_run["dm"]
    with open(run_dir / "forgetting_by_identity.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["identity"] for r in rows) == sorted(dm.split.forget_identities)
    for column in ("R@1", "AP", "CS"):
        assert {f"{column}_before", f"{column}_after", f"{column}_oracle"} <= set(rows[0])
    # every forgotten identity has the same number of held-out queries: rows average to the headline values
    assert np.mean([float(r["AP_after"]) for r in rows]) == pytest.approx(m["forget/mAP"], abs=1e-9)
    assert np.mean([float(r["R@1_before"]) for r in rows]) == pytest.approx(m["original/forget/R@1"], abs=1e-9)
    for name in ("projection.png", "cs_histograms.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["settings"]["ues_metric"] == "mAP" and evaluation["settings"]["protocol"] == "identity"


def test_wandb_offline_receives_tables_and_images(unlearn_run):
    media = (unlearn_run["run_dir"] / "wandb").glob("offline-run-*/files/media/*/eval/*")
    names = sorted(p.name for p in media)
    for prefix, suffix in (("projection", ".png"), ("cs_histograms", ".png"), ("metrics", ".table.json"),
                           ("forgetting_by_identity", ".table.json")):
        assert any(n.startswith(prefix) and n.endswith(suffix) for n in names), names


def test_pretraining_validate_has_no_reference_metrics(tiny_faces, original_ckpt, tmp_path):
    """A module without ``original``: no UES or original/…, but the model's own attack still runs."""
    from unlearnkit.methods.base import Pretrain

    model = Pretrain.load_from_checkpoint(original_ckpt, map_location="cpu")
    trainer = quiet_trainer(default_root_dir=str(tmp_path), callbacks=[FaceEvaluation(plots=False)])
    metrics = trainer.validate(model, datamodule=tiny_datamodule(tiny_faces), verbose=False)[0]
    assert "mia/membership_recall" in metrics and "forget/mAP" in metrics
    assert not any(k.startswith(("UES", "original/", "oracle")) for k in metrics)
    with open(tmp_path / "forgetting_by_identity.csv") as handle:
        assert set(next(csv.DictReader(handle))) == {"identity", "label", "images", "R@1_after", "AP_after",
                                                     "CS_after"}
    assert not (tmp_path / "projection.png").exists()


def test_each_cli_run_in_one_process_gets_its_own_wandb_run(tiny_faces, tmp_path):
    """The demo and the study run many CLI commands in one process: each must end its W&B run, or the next
    run's WandbLogger silently logs into it."""
    import wandb

    from unlearnkit.cli.main import main

    for name in ("first", "second"):
        args = pretrain_cli_args(tiny_faces, tmp_path / name, "--trainer.max_steps", "1", "--wandb", "true")
        assert main(args) == 0
        assert wandb.run is None
    for name in ("first", "second"):
        assert len(list((tmp_path / name / "wandb").glob("offline-run-*"))) == 1, name


# ------------------------------------------------------------------------- verification without forgotten people


def test_verification_utility_never_uses_forgotten_people():
    """Identity protocol: ``retained/`` pairs show retained people only, ``unseen/`` pairs people without any
    training image; pairs with a forgotten person are in neither. Forgotten people's embeddings are made
    random here, so the whole set's accuracy drops while the retained and unseen people's stays perfect."""
    from types import SimpleNamespace

    from unlearnkit.data.splits import make_split
    from unlearnkit.data.verification import PairSet

    # people p0..p11 with 6 images each, p12..p15 with 2, all held out (unseen people; e.g. a split manifest)
    identities = [f"p{k:02d}" for k in range(12) for _ in range(6)] + [f"p{k:02d}" for k in range(12, 16) for _ in range(2)]
    keys = [f"{person}/{n}.jpg" for n, person in enumerate(identities)]
    split = make_split(keys[:72], identities[:72], "identity", forget=3, heldout_per_identity=2, seed=0)
    split.keys, split.identities = keys, identities
    split.parts = np.concatenate([split.parts, np.full(8, "heldout", dtype=object)])
    dm = SimpleNamespace(split=split, source=SimpleNamespace(keys=keys, identities=identities))
    g = torch.Generator().manual_seed(0)
    centres = {p: F.normalize(torch.randn(32, generator=g), dim=0) for p in sorted(set(identities))}
    forgotten = set(split.forget_identities)
    z = torch.stack([F.normalize(torch.randn(32, generator=g), dim=0) if p in forgotten
                     else F.normalize(centres[p] + 0.05 * torch.randn(32, generator=g), dim=0) for p in identities])
    rng = np.random.default_rng(0)
    by_person = {p: [i for i, q in enumerate(identities) if q == p] for p in centres}
    pairs, issame = [], []
    for n in range(400):
        a = list(centres)[rng.integers(len(centres))]
        b = a if n % 2 == 0 else list(centres)[rng.integers(len(centres))]
        if n % 2 and a == b:
            continue
        pairs.append(tuple(int(i) for i in (rng.choice(by_person[a], 2, replace=False) if a == b
                                            else (rng.choice(by_person[a]), rng.choice(by_person[b])))))
        issame.append(a == b)
    pair_set = PairSet(lambda k: None, pairs, issame, name="set", keys=keys)
    who = pair_people(dm, pair_set)
    assert set(who[[identities.index(p) for p in forgotten]]) == {"forgotten"}
    assert set(who[-8:]) == {"unseen"} and (who == "retained").sum() == 72 - 6 * len(forgotten)

    ev = EvalEmbeddings({}, {"set": z})
    r = M.verification_metrics(ev, [pair_set], people={"set": who})
    assert r["verify/set/retained/acc"] == 1.0 and r["verify/set/unseen/acc"] == 1.0
    assert r["verify/set/acc"] < 0.97, "the whole set, forgotten people included, is not utility"
    kept = [k for k, (i, j) in enumerate(pairs) if who[i] == who[j] == "retained"]
    direct = MF.verification(z[[pairs[k][0] for k in kept]], z[[pairs[k][1] for k in kept]],
                             [issame[k] for k in kept])
    assert r["verify/set/retained/acc"] == pytest.approx(direct["acc"])
    assert r["verify/set/retained/tar@far=1e-3"] == pytest.approx(direct["tar@far"])
    # a set without people of a group reports no such key
    assert "verify/set/unseen/acc" not in M.verification_metrics(ev, [pair_set], people={"set": np.where(
        who == "unseen", "forgotten", who)})


# ------------------------------------------------------------------- sample protocols: memorisation, noise baseline


def _memorising_set(memorised: bool, seed: int = 0, identities: int = 30) -> EvalEmbeddings:
    """Each person's training images (retain and forget) sit close to a shared 'training' point, held-out ones
    are spread around the person's centre; ``memorised=False`` draws the forget images like held-out ones
    (a model that never trained on them)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(identities, 32, generator=g), dim=1)
    trained = F.normalize(centres + 0.6 * torch.randn(identities, 32, generator=g) / 32 ** 0.5, dim=1)
    z, labels, groups = [], [], []
    for group, n in (("retain_train", 6), ("retain_test", 3), ("forget_train", 3)):
        tight = group == "retain_train" or (group == "forget_train" and memorised)
        base = (trained if tight else centres).repeat_interleave(n, 0)
        z.append(base + (0.3 if tight else 2.5) * torch.randn(identities * n, 32, generator=g) / 32 ** 0.5)
        labels.append(torch.arange(identities).repeat_interleave(n))
        groups += [GROUP_ID[group]] * (identities * n)
    z = torch.cat(z)
    return EvalEmbeddings({"embeddings": F.normalize(z, dim=1), "labels": torch.cat(labels),
                           "ids": torch.arange(len(z)), "groups": torch.tensor(groups)}, {"p": F.normalize(z[:40], dim=1)})


def test_memorisation_gap_separates_memorised_forget_images_from_unseen_ones():
    memorised = M.heldout_metrics(_memorising_set(True))
    assert memorised["memorisation/mAP"] > 0.2 and memorised["memorisation/R@1"] > 0.1
    assert memorised["memorisation/mAP"] == pytest.approx(
        memorised["memorisation/forget_train/mAP"] - memorised["memorisation/heldout/mAP"])
    gaps = [M.heldout_metrics(_memorising_set(False, seed))["memorisation/mAP"] for seed in range(3)]
    assert abs(np.mean(gaps)) < 0.05, gaps
    ev = _memorising_set(True)
    groups = ev.retrieval["groups"]
    direct = MF.retrieval(ev.retrieval["embeddings"], ev.retrieval["labels"], ks=(1, 5),
                          query_mask=groups == GROUP_ID["retain_test"], gallery_mask=groups == GROUP_ID["retain_train"])
    assert memorised["retain_heldout/mAP"] == pytest.approx(direct["mAP"])
    assert memorised["retain_heldout/R@5"] == pytest.approx(direct["R@5"])


def test_noise_baseline_matches_the_models_drift():
    theta0 = _memorising_set(True)
    for target in (0.0, 0.05, 0.4):
        noisy = M.matched_noise(theta0, target, seed=1)
        assert M.drift(noisy, theta0) == pytest.approx(target, abs=1e-6)
        assert noisy.pairs["p"].shape == theta0.pairs["p"].shape
        assert torch.allclose(noisy.retrieval["embeddings"].norm(dim=1), torch.ones(len(noisy.retrieval["ids"])))
    assert torch.equal(M.matched_noise(theta0, 0.1, seed=1).retrieval["embeddings"],
                       M.matched_noise(theta0, 0.1, seed=1).retrieval["embeddings"])


# ------------------------------------------------------------------------------------------ the metric suite


def _forget_spread(ev: EvalEmbeddings, ctx) -> dict[str, float]:
    """A metric added by a user: 1 − the norm of the forget queries' mean embedding (0 = all in one point)."""
    z = ev.retrieval["embeddings"][ev.group(query_groups(ctx.protocol)["forget"])]
    return {"spread/forget": float(1 - z.double().mean(0).norm())}


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the suite's registry for this test: metrics registered here vanish afterwards."""
    monkeypatch.setattr(suite, "REGISTRY", dict(suite.REGISTRY))
    return suite.REGISTRY


def test_a_metric_registered_at_run_time_is_computed_for_every_subject(own_registry):
    theta0, oracle_ev, model = _memorising_set(True), _memorising_set(False, seed=1), _memorising_set(True, seed=2)
    suite.register("spread", _forget_spread, keys=("spread",))
    ctx = suite.Context("sample", suite.Settings(ues_reference="oracle"))
    original = suite.score_original(theta0, ctx)
    oracle = suite.score_oracle(oracle_ev, dataclasses.replace(ctx, original=original))
    m = suite.evaluate(model, dataclasses.replace(ctx, original=original, oracle=oracle))
    noisy = M.matched_noise(theta0, M.drift(model, theta0), seed=0)
    for prefix, ev in (("", model), ("original/", theta0), ("oracle/", oracle_ev), ("noise/", noisy)):
        assert m[f"{prefix}spread/forget"] == pytest.approx(_forget_spread(ev, ctx)["spread/forget"]), prefix
    # metrics that read other values run after it: its gap to the oracle is there too
    assert m["oracle_gap/spread/forget"] == pytest.approx(abs(m["spread/forget"] - m["oracle/spread/forget"]))
    assert "noise/oracle_gap/spread/forget" in m
    # the references' rules: θ0 against nothing, the oracle against θ0 (its own UES, no gap to itself)
    assert not any(k.startswith(("original/UES", "original/drift", "original/oracle_gap")) for k in m)
    assert m["oracle/UES"] == pytest.approx(1.0) and "oracle/drift" in m
    assert not any(k.startswith("oracle/oracle_gap") for k in m)
    assert m["UES"] == pytest.approx(ues_metrics(m, original.values, oracle.values, reference="oracle")["UES"])
    assert m["memorisation/mAP"] == M.heldout_metrics(model)["memorisation/mAP"]
    # a metric that needs the oracle is skipped where there is none
    suite.register("needs_oracle", lambda ev, ctx: {"vs_oracle": 1.0}, keys=("vs_oracle",), needs=("oracle",))
    assert "vs_oracle" not in suite.evaluate(model, dataclasses.replace(ctx, original=original))
    assert "vs_oracle" in suite.evaluate(model, dataclasses.replace(ctx, original=original, oracle=oracle))
    assert "spread" in suite.key_prefixes()


def test_the_suite_refuses_metrics_that_break_its_contract(own_registry):
    with pytest.raises(ValueError, match="overlaps 'forget'"):
        suite.register("mine", _forget_spread, keys=("forget/spread",))
    with pytest.raises(ValueError, match="overlaps 'noise'"):
        suite.register("mine", _forget_spread, keys=("noise",))
    with pytest.raises(ValueError, match="needs"):
        suite.register("mine", _forget_spread, keys=("spread",), needs=("teacher",))
    with pytest.raises(ValueError, match="option"):
        suite.register("mine", _forget_spread, keys=("spread",), option="ks")
    suite.register("mine", _forget_spread, keys=("scatter",))  # returns spread/…, outside its prefix
    with pytest.raises(ValueError, match="'spread/forget', outside its key prefixes"):
        suite.evaluate(_memorising_set(True), suite.Context("sample"))


def test_a_metric_registered_at_run_time_reaches_metrics_json(tiny_faces, original_ckpt, tmp_path, own_registry):
    """Through the callback: logged, in ``metrics.json`` and ``evaluation.json``, which ``RunSummary`` alone
    writes, both with the suite's values as computed (before, metrics.json held Lightning's float32 copies)."""
    from unlearnkit.methods.base import Pretrain

    suite.register("spread", _forget_spread, keys=("spread",))
    model = Pretrain.load_from_checkpoint(original_ckpt, map_location="cpu")
    alone = FaceEvaluation(plots=False, per_identity=False, mia=False)
    logged = quiet_trainer(default_root_dir=str(tmp_path / "alone"), callbacks=[alone]).validate(
        model, datamodule=tiny_datamodule(tiny_faces), verbose=False)[0]
    assert logged["spread/forget"] == pytest.approx(alone.last["spread/forget"])
    assert alone.last["spread/forget"] == _forget_spread(alone.last_ev, suite.Context("identity"))["spread/forget"]
    assert not (tmp_path / "alone" / "evaluation.json").exists(), "the callback itself writes no summary file"

    evaluation = FaceEvaluation(plots=False, per_identity=False, mia=False)
    quiet_trainer(default_root_dir=str(tmp_path / "run"), callbacks=[evaluation, RunSummary()]).validate(
        model, datamodule=tiny_datamodule(tiny_faces), verbose=False)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    values = json.loads((tmp_path / "run" / "evaluation.json").read_text())["metrics"]
    assert values == evaluation.last and "spread/forget" in values
    assert {k: summary[k] for k in values} == values
