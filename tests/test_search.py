"""The torch nearest-neighbour search (the GPU path where FAISS has no GPU) against FAISS's exact CPU index."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.errors import ConfigError
from unlearnkit.metrics import search


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_torch_knn_equals_faiss_flat_index():
    queries, gallery = unit(300, 48, 0), unit(2000, 48, 1)
    scores, indices = search.torch_knn(queries, gallery, k=7, chunk_size=64)
    ref_scores, ref_indices = search.knn(queries, gallery, k=7)  # FAISS IndexFlatIP on the CPU
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)
    assert (indices == ref_indices).float().mean() > 0.999  # continuous random data: no ties


def test_torch_knn_pads_like_faiss_when_gallery_is_small():
    queries, gallery = unit(5, 8, 2), unit(3, 8, 3)
    scores, indices = search.torch_knn(queries, gallery, k=5)
    ref_scores, ref_indices = search.knn(queries, gallery, k=5)
    assert torch.equal(indices, ref_indices) and (indices[:, 3:] == -1).all()
    torch.testing.assert_close(scores, ref_scores, atol=1e-6, rtol=0)


def test_torch_knn_checks_its_input():
    with pytest.raises(ConfigError, match="k must be"):
        search.torch_knn(unit(2, 4, 0), unit(3, 4, 1), k=0)
    with pytest.raises(ValueError, match="one d"):
        search.torch_knn(unit(2, 4, 0), unit(3, 5, 1), k=1)
