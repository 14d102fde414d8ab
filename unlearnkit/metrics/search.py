"""Nearest neighbours and K-means with FAISS: on a GPU where FAISS sees one, on the CPU otherwise.

The faiss-gpu wheel also runs on machines without a GPU, but there its GPU indexes raise and
``Kmeans(gpu=True)`` silently runs on the CPU, so the path is chosen from ``faiss.get_num_gpus()``.
FAISS's GPU wheel is built for CUDA 12; where it sees no GPU but the queries are CUDA tensors (a CUDA 13
machine, a CPU-only FAISS build), exact search runs as a chunked product + top-k in torch on that GPU.
"""

from __future__ import annotations

import numpy as np
import torch

from unlearnkit.errors import ConfigError

__all__ = ["knn", "kmeans", "torch_knn", "use_gpu"]

# scratch memory of the process's FAISS GPU resources: bounded so FAISS does not claim a share of the GPU
# that training needs
GPU_TEMP_MEMORY = 256 * 1024 * 1024
_gpu_resources = None


def use_gpu() -> bool:
    """Whether FAISS can run on a GPU here."""
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _resources():
    """One ``StandardGpuResources`` per process: each holds streams and scratch memory on the device."""
    global _gpu_resources
    if _gpu_resources is None:
        import faiss

        _gpu_resources = faiss.StandardGpuResources()
        _gpu_resources.setTempMemory(GPU_TEMP_MEMORY)
    return _gpu_resources


def _as_numpy(x, name: str) -> np.ndarray:
    """A C-contiguous float32 (n, d) array, as FAISS wants it."""
    x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def knn(queries, gallery, k: int, chunk_size: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest inner products of each query with the gallery: (scores, indices), best first.

    Vectors are used as given (normalise them for cosine). Exact search (flat index); queries go in chunks
    of ``chunk_size`` so the result buffers of a GPU search stay bounded. Indices are -1 where the gallery
    has fewer than k items. Results are on the queries' device.
    """
    import faiss

    if isinstance(queries, torch.Tensor) and queries.is_cuda and not use_gpu():
        return torch_knn(queries, torch.as_tensor(gallery), k, chunk_size)
    q = _as_numpy(queries, "queries")
    g = _as_numpy(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]}, the gallery {g.shape[1]}")
    if k < 1:
        raise ConfigError(f"k must be >= 1 for a nearest-neighbour search, got {k}")
    if use_gpu():
        index = faiss.GpuIndexFlatIP(_resources(), g.shape[1])
    else:
        index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], chunk_size):
        scores[start:start + chunk_size], indices[start:start + chunk_size] = index.search(
            q[start:start + chunk_size], k)
    device = queries.device if isinstance(queries, torch.Tensor) else "cpu"
    return torch.from_numpy(scores).to(device), torch.from_numpy(indices).to(device)


# a chunk of the torch search holds at most this many scores (128 MB in float32)
TORCH_CHUNK_SCORES = 2**25


def torch_knn(queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk_size: int = 65536):
    """Exact inner-product kNN in torch on the queries' device, with FAISS's conventions: (scores, indices)
    best first, index -1 and score -FLT_MAX where the gallery has fewer than k items."""
    g = gallery.to(queries.device, torch.float32)
    q = queries.float()
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and gallery {tuple(g.shape)} must be (n, d) of one d")
    if k < 1:
        raise ConfigError(f"k must be >= 1 for a nearest-neighbour search, got {k}")
    found = min(k, g.shape[0])
    scores = torch.full((q.shape[0], k), torch.finfo(torch.float32).min, device=q.device)
    indices = torch.full((q.shape[0], k), -1, dtype=torch.int64, device=q.device)
    step = max(1, min(chunk_size, TORCH_CHUNK_SCORES // max(g.shape[0], 1)))
    for start in range(0, q.shape[0] if found else 0, step):
        top = torch.topk(q[start:start + step] @ g.T, found, dim=1)
        scores[start:start + step, :found], indices[start:start + step, :found] = top.values, top.indices
    return scores, indices


def kmeans(x, k: int, seed: int = 0, niter: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means (Euclidean) with ``faiss.Kmeans``: (centroids (k, d) float32, assignments (n,) int64), on x's
    device.

    Deterministic for a seed on the CPU (FAISS's GPU path may differ in the last bits between runs).
    """
    import faiss

    data = _as_numpy(x, "x")
    if not 1 <= k <= data.shape[0]:
        raise ConfigError(f"K-means needs 1 <= K <= number of points, got K={k} for {data.shape[0]} points")
    # min_points_per_centroid=1: small forget sets are expected here, FAISS's warning about them is noise
    km = faiss.Kmeans(data.shape[1], int(k), niter=int(niter), seed=int(seed), gpu=use_gpu(),
                      min_points_per_centroid=1)
    km.train(data)
    _, assign = km.index.search(data, 1)
    device = x.device if isinstance(x, torch.Tensor) else "cpu"
    centroids = torch.from_numpy(np.ascontiguousarray(km.centroids, dtype=np.float32))
    return centroids.to(device), torch.from_numpy(assign[:, 0].astype(np.int64)).to(device)
