"""On a CUDA device: FAISS kNN and K-means on the GPU equal the CPU search, a bf16 + compiled unlearning run
gives float32 metrics, and (with two GPUs) NCCL DDP metrics equal one GPU's. Skipped without CUDA."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
from conftest import quiet_trainer, tiny_datamodule

from unlearnkit.metrics import search

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def faiss_gpu():
    if not search.use_gpu():
        pytest.skip("FAISS sees no GPU (faiss-gpu is not installed, or is a CPU build)")


def on_cpu(fn, *args, **kwargs):
    """Run a search function with FAISS's GPU path switched off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search, "use_gpu", lambda: False)
        return fn(*args, **kwargs)


def test_knn_of_cuda_tensors_equals_cpu_search():
    """CUDA queries are searched on the GPU by FAISS where it sees one, else by torch: the CPU's neighbours."""
    g = torch.Generator().manual_seed(0)
    gallery = torch.nn.functional.normalize(torch.randn(3000, 64, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(400, 64, generator=g), dim=1)
    scores, indices = search.knn(queries.cuda(), gallery.cuda(), k=10, chunk_size=128)
    assert scores.device.type == "cuda" and indices.device.type == "cuda"
    cpu_scores, cpu_indices = on_cpu(search.knn, queries, gallery, k=10)
    torch.testing.assert_close(scores.cpu(), cpu_scores, atol=1e-5, rtol=0)
    # the same neighbours, except where two candidates tie to within float error
    differ = indices.cpu() != cpu_indices
    true_scores = queries @ gallery.T
    gap = (true_scores.gather(1, indices.cpu()) - true_scores.gather(1, cpu_indices)).abs()
    assert (gap[differ] < 1e-5).all()
    assert differ.float().mean() < 0.01


def test_kmeans_gpu_equals_cpu(faiss_gpu):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 32)).astype(np.float32) * 4
    x = torch.from_numpy(np.concatenate([c + 0.05 * rng.normal(size=(100, 32)) for c in centres]).astype(np.float32))
    centroids, assign = search.kmeans(x.cuda(), 8, seed=1)
    assert centroids.device.type == "cuda" and assign.device.type == "cuda"
    cpu_centroids, cpu_assign = on_cpu(search.kmeans, x, 8, seed=1)
    # the same partition (cluster numbers may differ) and the same centroids under that matching
    pairs = {(int(a), int(b)) for a, b in zip(assign.cpu(), cpu_assign)}
    assert len(pairs) == 8 and len({a for a, _ in pairs}) == 8 and len({b for _, b in pairs}) == 8
    order = torch.tensor([b for _, b in sorted(pairs)])
    torch.testing.assert_close(centroids.cpu(), cpu_centroids[order], atol=1e-4, rtol=1e-4)


class Float32Check(L.Callback):
    """Records the dtype of the validation outputs and of the embeddings the metrics are computed from."""

    def __init__(self) -> None:
        self.output_dtypes: set = set()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.output_dtypes.add(outputs["embedding"].dtype)


def test_bf16_compiled_unlearning_on_gpu(tiny_faces, original_ckpt, tmp_path):
    from unlearnkit.callbacks.evaluation import FaceEvaluation
    from unlearnkit.methods.cure import Cure

    L.seed_everything(0)
    model = Cure(original=str(original_ckpt), lr=1e-3, num_clusters=3, retain_clusters=4, compile=True)
    evaluation, check = FaceEvaluation(), Float32Check()
    trainer = quiet_trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=1,
                            limit_train_batches=2, callbacks=[evaluation, check], default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=tiny_datamodule(tiny_faces, protocol="sample", forget=0.2))
    assert model._compiled and model.backbone._compiled_call_impl is not None
    assert check.output_dtypes == {torch.float32}
    assert evaluation.last and all(np.isfinite(v) for v in evaluation.last.values())
    assert not any("_orig_mod" in k for k in model.state_dict())


@pytest.mark.ddp
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_metrics_under_nccl_ddp_equal_one_gpu(tiny_faces, original_ckpt, tmp_path):
    import ddp_script
    from test_ddp import run_script, write_pairs

    pairs = write_pairs(tiny_faces, tmp_path / "pairs.txt")
    run_script("eval", tmp_path / "ddp", tiny_faces, original_ckpt, "--pairs", str(pairs), "--devices", "2",
               "--accelerator", "gpu")
    single = ddp_script.evaluate(str(tiny_faces), str(original_ckpt), str(pairs), devices=1,
                                 root=str(tmp_path / "single"), accelerator="gpu")
    ddp = json.loads((tmp_path / "ddp" / "eval_rank0.json").read_text())["metrics"]
    assert ddp.keys() == single.keys()
    assert all(abs(ddp[k] - single[k]) <= 1e-5 for k in single), (ddp, single)
