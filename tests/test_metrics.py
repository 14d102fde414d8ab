"""Metrics against independent references: sklearn AP per query, brute-force tie expectations, python loops,
a plain copy of insightface's verification loop, and hand-made UES / membership-inference cases."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

from unlearnkit.errors import ConfigError
from unlearnkit.metrics import functional as MF
from unlearnkit.metrics.collector import EmbeddingCollector
from unlearnkit.metrics.search import kmeans, knn


# ----------------------------------------------------------------------------------------------- helpers
def clustered(n=300, d=16, n_id=25, spread=1.5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_id, n)
    x = rng.normal(size=(n_id, d))[labels] + spread * rng.normal(size=(n, d))
    return x.astype(np.float32), labels


def exact_ties(n=300, d=8, n_id=25, seed=0):
    """Unit vectors of four +-0.5 entries: every dot product is a multiple of 0.25, exact in any order."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = 0.5 * rng.choice([-1, 1], 4)
    return x, rng.integers(0, n_id, n)


def chance_hit(scores, positive, k):
    """P(a positive in the top k) under random tie order, by counting subsets (hypergeometric)."""
    best = scores[positive].max()
    greater, tied, tied_pos = (scores > best).sum(), (scores == best).sum(), (scores[positive] == best).sum()
    free = k - greater
    if free <= 0:
        return 0.0
    if free >= tied:
        return 1.0
    return 1.0 - math.comb(int(tied - tied_pos), int(free)) / math.comb(int(tied), int(free))


def reference_retrieval(x, labels, ks, queries=None, gallery=None):
    """Per query: sklearn AP and the tie expectation of R@k on float64 cosine scores."""
    z = normalize(x.astype(np.float64))
    n = len(z)
    queries = range(n) if queries is None else queries
    gallery = np.arange(n) if gallery is None else np.asarray(gallery)
    aps, hits = [], {k: [] for k in ks}
    for q in queries:
        g = gallery[gallery != q]
        scores, positive = z[g] @ z[q], labels[g] == labels[q]
        if not positive.any():
            continue
        aps.append(average_precision_score(positive, scores))
        for k in ks:
            hits[k].append(chance_hit(scores, positive, k))
    return np.mean(aps), {k: np.mean(v) for k, v in hits.items()}, len(aps)


@pytest.fixture(params=["sparse", "dense"])
def path(request, monkeypatch):
    """Run retrieval through both of its counting paths (picking candidates out, or searching every score)."""
    monkeypatch.setattr(MF, "DENSE_SHARE", 2.0 if request.param == "sparse" else -1.0)
    return request.param


# -------------------------------------------------------------------------------------------- retrieval
@functools.cache
def reference_case(data):
    """Data and its reference values, shared by both counting paths' runs."""
    x, labels = clustered() if data == "random" else exact_ties()
    return x, labels, reference_retrieval(x, labels, (1, 5, 10))


@pytest.mark.parametrize("data", ["random", "tied"])
def test_retrieval_equals_sklearn_ap_and_tie_expectation(data, path):
    x, labels, (ap, recall, n_q) = reference_case(data)
    ks = (1, 5, 10)
    out = MF.retrieval(x, labels, ks=ks, chunk_size=37)
    assert out["n_queries"] == n_q
    assert out["mAP"] == pytest.approx(ap, abs=1e-6)
    for k in ks:
        assert out[f"R@{k}"] == pytest.approx(recall[k], abs=1e-9)
    if data == "tied":  # the data must tie a positive with negatives at the first place, or ties go untested
        z = x.astype(np.float64)
        fractional = [0 < chance_hit(np.delete(z @ z[q], q), np.delete(labels == labels[q], q), 1) < 1
                      for q in range(len(x)) if (labels == labels[q]).sum() > 1]
        assert sum(fractional) > 20


def test_recall_ties_by_enumerating_every_order(path):
    """R@k = mean over all orderings of tied items (7! per query), counted directly."""
    x, labels = exact_ties(n=8, d=4, n_id=3, seed=3)
    z = x.astype(np.float64)
    ks = (1, 2, 3)
    hits = {k: [] for k in ks}
    for q in range(8):
        g = np.array([i for i in range(8) if i != q])
        scores, positive = z[g] @ z[q], labels[g] == labels[q]
        if not positive.any():
            continue
        for k in ks:
            found = [positive[sorted(range(7), key=lambda i: (-scores[i], perm[i]))[:k]].any()
                     for perm in itertools.permutations(range(7))]
            hits[k].append(np.mean(found))
    out = MF.retrieval(x, labels, ks=ks)
    for k in ks:
        assert out[f"R@{k}"] == pytest.approx(np.mean(hits[k]), abs=1e-12)


def test_collapsed_model_scores_chance(path):
    """All embeddings equal: every gallery item ties, so AP = positive rate and R@k = 1 - C(n-P, k)/C(n, k)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 60)
    x = np.tile(rng.normal(size=(1, 12)), (60, 1)).astype(np.float32)
    out = MF.retrieval(torch.from_numpy(x), torch.from_numpy(labels), ks=(1, 5))
    g = 59
    pos = np.array([(labels == labels[q]).sum() - 1 for q in range(60)])
    pos = pos[pos > 0]
    assert out["mAP"] == pytest.approx(np.mean(pos / g), abs=1e-12)
    for k in (1, 5):
        assert out[f"R@{k}"] == pytest.approx(np.mean([1 - math.comb(g - p, k) / math.comb(g, k) for p in pos]))
    assert 0.05 < out["R@1"] < 0.5


def test_retrieval_query_and_gallery_masks(path, monkeypatch):
    monkeypatch.setattr(MF, "MAX_CHUNK_SCORES", 1000)  # a large gallery shrinks chunks below chunk_size
    x, labels = clustered(n=200, seed=2)
    rng = np.random.default_rng(5)
    query = rng.random(200) < 0.3
    gallery = ~query | (rng.random(200) < 0.5)  # some queries are in the gallery too: never matched to self
    ap, recall, n_q = reference_retrieval(x, labels, (1, 5), np.nonzero(query)[0], np.nonzero(gallery)[0])
    out = MF.retrieval(x, labels, query_mask=query, gallery_mask=torch.from_numpy(gallery), chunk_size=16)
    assert (out["mAP"], out["R@1"], out["R@5"], out["n_queries"]) == pytest.approx((ap, recall[1], recall[5], n_q))


def test_retrieval_skips_queries_without_positive_and_accepts_string_labels():
    x, _ = clustered(n=6, seed=1)
    labels = np.array(["ann", "bob", "ann", "cid", "bob", "dan"])
    out = MF.retrieval(x, labels, ks=(1,))
    ap, recall, n_q = reference_retrieval(x, labels, (1,))
    assert out["n_queries"] == n_q == 4
    assert out["mAP"] == pytest.approx(ap) and out["R@1"] == pytest.approx(recall[1])
    assert math.isnan(MF.retrieval(x, np.arange(6))["mAP"])


def test_order_keys_are_monotone_and_equal_for_equal_floats():
    v = torch.cat([torch.randn(1000), torch.tensor([0.0, -0.0, -1.0, 1.0, 1e-30, -1e-30])])
    rows = torch.randint(0, 3, (v.numel(),))
    keys = MF._order_keys(v, rows)
    order = torch.argsort(keys)
    pairs = torch.stack([rows[order].double(), v[order].double()], 1)
    assert (pairs[1:, 0] > pairs[:-1, 0]).logical_or((pairs[1:, 0] == pairs[:-1, 0]) & (pairs[1:, 1] >= pairs[:-1, 1])).all()
    zero = MF._order_keys(torch.tensor([0.0, -0.0]), torch.zeros(2, dtype=torch.long))
    assert zero[0] == zero[1]


# ------------------------------------------------------------------------------------------ compactness
def test_compactness_equals_pairwise_loop():
    x, labels = clustered(n=80, n_id=12, seed=4)
    labels[0] = 99  # a singleton identity: skipped
    z = normalize(x.astype(np.float64))
    per = {}
    for lab in np.unique(labels):
        idx = np.nonzero(labels == lab)[0]
        if len(idx) >= 2:
            per[lab] = np.mean([z[i] @ z[j] for i in idx for j in idx if i != j])
    got = MF.compactness_per_identity(x, labels)
    assert set(got) == set(per) and 99 not in got
    for lab in per:
        assert got[lab] == pytest.approx(per[lab], abs=1e-6)
    assert MF.compactness(torch.from_numpy(x), torch.from_numpy(labels)) == pytest.approx(np.mean(list(per.values())))
    assert math.isnan(MF.compactness(x[:3], [1, 2, 3]))


# ----------------------------------------------------------------------------------------- verification
def insightface_verification(emb1, emb2, issame, nrof_folds=10, far_target=1e-3):
    """insightface eval/verification.py, calculate_roc / calculate_val, written out as loops; the only change is
    the FAR -> threshold step (interp1d crashes on repeated FAR values): the largest threshold with FAR <= target."""
    e1, e2 = normalize(emb1), normalize(emb2)
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)

    def calculate_accuracy(threshold, dist, actual_issame):
        predict_issame = np.less(dist, threshold)
        tp = np.sum(np.logical_and(predict_issame, actual_issame))
        tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
        return float(tp + tn) / dist.size

    def calculate_val_far(threshold, dist, actual_issame):
        predict_issame = np.less(dist, threshold)
        true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
        false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
        return float(true_accept) / float(np.sum(actual_issame)), float(false_accept) / float(
            np.sum(np.logical_not(actual_issame)))

    thresholds = np.arange(0, 4, 0.01)
    accuracy, best = [], []
    indices = np.arange(len(issame))
    for train_set, test_set in KFold(n_splits=nrof_folds, shuffle=False).split(indices):
        acc_train = np.zeros(len(thresholds))
        for i, threshold in enumerate(thresholds):
            acc_train[i] = calculate_accuracy(threshold, dist[train_set], issame[train_set])
        best_index = np.argmax(acc_train)
        accuracy.append(calculate_accuracy(thresholds[best_index], dist[test_set], issame[test_set]))
        best.append(thresholds[best_index])
    thresholds = np.arange(0, 4, 0.001)
    val = []
    for train_set, test_set in KFold(n_splits=nrof_folds, shuffle=False).split(indices):
        far_train = np.array([calculate_val_far(t, dist[train_set], issame[train_set])[1] for t in thresholds])
        threshold = thresholds[np.nonzero(far_train <= far_target)[0].max()]
        val.append(calculate_val_far(threshold, dist[test_set], issame[test_set])[0])
    return np.mean(accuracy), np.std(accuracy), np.mean(best), np.mean(val), np.std(val)


def verification_pairs(n=400, d=16, signal=0.9, seed=0):
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    e1 = rng.normal(size=(n, d))
    e2 = np.where(issame[:, None], e1 + signal * rng.normal(size=(n, d)) * 1.5, rng.normal(size=(n, d)))
    return e1, e2, issame


def test_verification_equals_insightface_loop():
    e1, e2, issame = verification_pairs()
    out = MF.verification(torch.from_numpy(e1), torch.from_numpy(e2), torch.from_numpy(issame), folds=10, far=1e-2)
    acc, acc_std, threshold, tar, tar_std = insightface_verification(e1, e2, issame, 10, 1e-2)
    assert 0.6 < acc < 0.99 and 0 < tar < 1  # neither trivial nor hopeless: thresholds matter
    assert out["acc"] == pytest.approx(acc, abs=1e-12) and out["acc_std"] == pytest.approx(acc_std, abs=1e-12)
    assert out["threshold"] == pytest.approx(threshold, abs=1e-12)
    assert out["tar@far"] == pytest.approx(tar, abs=1e-12) and out["tar@far_std"] == pytest.approx(tar_std, abs=1e-12)


def test_verification_separable_and_far_1e3():
    e1, e2, issame = verification_pairs(n=600, signal=0.1, seed=1)
    out = MF.verification(e1, e2, issame)  # FAR 1e-3 with 30 negatives per fold: repeated FAR values everywhere
    assert out["acc"] == 1.0 and out["tar@far"] == pytest.approx(insightface_verification(e1, e2, issame)[3])


# ------------------------------------------------------------------------------------------------- UES
@pytest.mark.parametrize("args, expected", [
    ((0.8, 0.0, 0.9, 0.9), (1.0, 1.0, 1.0)),            # forgot everything, retained everything
    ((0.8, 0.8, 0.9, 0.9), (0.0, 0.0, 1.0)),            # forgot nothing
    ((0.8, 0.9, 0.9, 0.9), (0.0, 0.0, 1.0)),            # forget performance went up: F clipped to 0
    ((0.8, 0.4, 0.8, 0.4), (0.5, 0.5, 0.5)),            # half forgotten, half the retain performance lost
    ((0.8, 0.0, 0.8, 1.2), (2 / 3, 1.0, 0.5)),          # retain drift upwards is penalised too
    ((0.5, 0.0, 0.5, 2.0), (0.0, 1.0, 0.0)),            # drift beyond 100%: R clipped to 0, UES 0
    ((0.0, 0.0, 0.9, 0.9), (0.0, 0.0, 1.0)),            # nothing to forget
])
def test_ues_hand_cases(args, expected):
    out = MF.ues(*args)
    assert (out["UES"], out["F"], out["R"]) == pytest.approx(expected)


# -------------------------------------------------------------------------------- membership inference
def test_membership_inference_separable():
    rng = np.random.default_rng(0)
    out = MF.membership_inference(rng.normal(2, 1, (400, 3)), rng.normal(-2, 1, (300, 3)), rng.normal(2, 1, (100, 3)))
    assert out["attack_acc"] > 0.95 and out["attack_auc"] > 0.99 and out["membership_recall"] > 0.95
    assert out["attack_fpr"] < 0.05 and out["forget_auc"] > 0.99
    out = MF.membership_inference(rng.normal(2, 1, (400, 3)), rng.normal(-2, 1, (300, 3)), rng.normal(-2, 1, (100, 3)))
    assert out["membership_recall"] < 0.05 and abs(out["forget_auc"] - 0.5) < 0.15


def test_membership_inference_useless_attack_is_visible():
    """Same distribution for everything; 5x more members than non-members, so an unbalanced attack would
    claim ~0.83 accuracy by always answering 'member'."""
    rng = np.random.default_rng(1)
    out = MF.membership_inference(rng.normal(size=(1500, 3)), rng.normal(size=(300, 3)), rng.normal(size=(500, 3)))
    assert abs(out["attack_acc"] - 0.5) < 0.1 and abs(out["attack_auc"] - 0.5) < 0.1
    assert 0.2 < out["membership_recall"] < 0.8
    assert abs(out["membership_recall"] - out["attack_fpr"]) < 0.15 and abs(out["forget_auc"] - 0.5) < 0.1


def _brute_features(z, label, left_out, t, train_labels, z_all=None, labels_all=None, i=None):
    """SPEC §3's three features of one sample against the reference rows of ``t`` other than ``left_out``."""
    keep = [j for j in range(len(t)) if j != left_out]
    nearest = max(z @ t[j] for j in keep)
    cent = {}
    for lab in sorted(set(train_labels)):
        rows = [j for j in keep if train_labels[j] == lab]
        total = t[rows].sum(0) if rows else np.zeros_like(z)
        cent[lab] = total / max(np.linalg.norm(total), 1e-12)
    if label not in cent:  # a label absent from the reference: leave-one-out among the samples
        total = sum(z_all[k] for k in range(len(z_all)) if labels_all[k] == label and k != i)
        cent[label] = total / max(np.linalg.norm(total), 1e-12)
    to_c = sorted((z @ c for c in cent.values()), reverse=True)
    return [nearest, z @ cent[label], to_c[0] - to_c[1]]


def test_mia_features_equal_brute_force():
    """Members leave themselves out; other samples leave out one reference image of their own label; a label
    absent from the reference takes its leave-one-out centroid among the samples."""
    rng = np.random.default_rng(2)
    train, train_labels = clustered(n=60, d=8, n_id=6, seed=6)
    train_ids = np.arange(100, 160)
    # samples: 10 members (their own reference rows), 8 held-out ones and 2 of a label absent from the reference
    held, _ = clustered(n=10, d=8, n_id=6, seed=7)
    x = np.concatenate([train[:10], held])
    labels = np.concatenate([train_labels[:10], rng.integers(0, 6, 8), [42, 42]])
    ids = np.concatenate([train_ids[:10], np.arange(500, 510)])
    got = MF.mia_features(torch.from_numpy(x), labels, train, train_labels, ids=ids, reference_ids=train_ids)

    z, t = normalize(x.astype(np.float64)), normalize(train.astype(np.float64))
    for i in range(len(x)):
        if i < 10:
            candidates = [i]  # a member leaves itself out
        elif labels[i] in train_labels:
            candidates = list(np.flatnonzero(train_labels == labels[i]))
        else:
            candidates = [-1]
        options = [_brute_features(z[i], labels[i], c, t, train_labels, z, labels, i) for c in candidates]
        assert any(got[i] == pytest.approx(o, abs=1e-5) for o in options), i
    assert (got[:10, 0] < 1 - 1e-4).all(), "a member found itself as its nearest neighbour"
    # the draw of the left-out image is seeded
    again = MF.mia_features(x, labels, train, train_labels, ids=ids, reference_ids=train_ids)
    assert np.array_equal(got, again)


# ---------------------------------------------------------------------------------------------- search
def test_knn_equals_brute_force():
    g = torch.nn.functional.normalize(torch.randn(500, 32), dim=1)
    q = torch.nn.functional.normalize(torch.randn(70, 32), dim=1)
    scores, index = knn(q, g, 5, chunk_size=16)
    ref = (q @ g.T).topk(5, dim=1)
    assert torch.equal(index, ref.indices) and torch.allclose(scores, ref.values, atol=1e-5)
    assert scores.dtype == torch.float32 and index.dtype == torch.int64


def test_kmeans_blobs_deterministic_and_checks_k():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    x = torch.from_numpy((10 * rng.normal(size=(4, 8))[truth] + rng.normal(size=(200, 8))).astype(np.float32))
    c1, a1 = kmeans(x, 4, seed=3)
    c2, a2 = kmeans(x, 4, seed=3)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    assert c1.shape == (4, 8) and a1.dtype == torch.int64
    assert torch.equal(a1, torch.cdist(x, c1).argmin(1))  # assignments are the nearest centroids
    for k in range(4):  # each true blob is one cluster
        assert len(set(a1[truth == k].tolist())) == 1
    with pytest.raises(ConfigError):
        kmeans(x, 201)
    with pytest.raises(ConfigError):
        kmeans(x, 0)


# ------------------------------------------------------------- the DDP-exact collector and the functional metrics
def shuffled_batches_with_repeats(n, batch, seed):
    """Sample order as several ranks/batches might deliver it, with padding repeats (DDP sampler)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n), rng.choice(n, 7)])
    return [torch.from_numpy(order[i:i + batch]) for i in range(0, len(order), batch)]


def test_collected_retrieval_and_compactness_equal_functional():
    """The evaluation gathers embeddings with ``EmbeddingCollector`` (which replaced the torchmetrics metric
    classes): each id once whatever the batch order and padding repeats, so the functional metrics on what it
    gathered equal them on the plain arrays, per query group too."""
    x, labels = clustered(n=150, seed=8)
    group = (labels % 3 == 0).astype(np.int64)  # 1 = "forget" identities
    xt, lt, gt = torch.from_numpy(x).double(), torch.from_numpy(labels), torch.from_numpy(group)
    collector, low = EmbeddingCollector(), EmbeddingCollector()
    for idx in shuffled_batches_with_repeats(150, 32, 0):
        collector.update(xt[idx], idx + 1000, lt[idx], gt[idx])
        low.update(xt[idx].to(torch.bfloat16), idx, lt[idx])
    got = collector.compute()
    assert got["ids"].tolist() == list(range(1000, 1150))
    z, zl, zg = got["embeddings"], got["labels"], got["groups"]
    assert MF.retrieval(z, zl) == pytest.approx(MF.retrieval(x, labels))
    for code in (0, 1):
        assert MF.retrieval(z, zl, query_mask=zg == code) == pytest.approx(MF.retrieval(x, labels, query_mask=group == code))
        assert MF.compactness(z[zg == code], zl[zg == code]) == pytest.approx(
            MF.compactness(x[group == code], labels[group == code]))
    assert MF.retrieval(z, zl, query_mask=zg == 1)["n_queries"] < 150
    assert MF.compactness(low.compute()["embeddings"], labels) == pytest.approx(
        MF.compactness(xt.to(torch.bfloat16).float(), labels), abs=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_collected_pair_images_give_the_verification_of_the_pairs():
    """Pair sets are gathered as images, each id once in id order (repeats dropped), so the verification of
    the pairs over the gathered images equals the functional metric on the plain pairs; a collector that
    received nothing (a rank without samples) gathers an empty set."""
    e1, e2, issame = verification_pairs(n=300, seed=3)
    images, pairs = np.concatenate([e1, e2]), np.stack([np.arange(300), 300 + np.arange(300)], 1)
    collector = EmbeddingCollector()
    for idx in shuffled_batches_with_repeats(600, 64, 1):
        collector.update(torch.from_numpy(images[idx]), idx)
    got = collector.compute()
    assert got["ids"].tolist() == list(range(600))
    z = got["embeddings"]
    assert MF.verification(z[pairs[:, 0]], z[pairs[:, 1]], issame, folds=10, far=1e-2) == pytest.approx(
        MF.verification(e1, e2, issame, folds=10, far=1e-2))
    empty = EmbeddingCollector().compute()
    assert empty["embeddings"].numel() == 0 and empty["ids"].numel() == 0
