"""SPEC §3 metrics: plain functions in ``functional``, torchmetrics classes for loops and DDP, FAISS helpers."""

from unlearnkit.metrics import functional
from unlearnkit.metrics.classes import ClusterCompactness, RetrievalMetrics, VerificationAccuracy

__all__ = ["functional", "RetrievalMetrics", "ClusterCompactness", "VerificationAccuracy"]
