"""SPEC §3 metrics: plain functions (``functional``), FAISS helpers (``search``), the DDP-exact embedding
collector (``collector``), SPEC §3's measures of one model (``measures``) and the registry that runs them
for the model and its references (``suite``)."""

from unlearnkit.metrics import functional

__all__ = ["functional"]
