"""Classification heads on top of embeddings: margin-softmax heads and the fixed-centroid head."""

from unlearnkit.heads.margin import (
    HEADS,
    ArcFaceHead,
    CentroidHead,
    CosFaceHead,
    CosineHead,
    MarginHead,
    add_class,
    create_head,
    drop_last_class,
)

__all__ = [
    "HEADS",
    "ArcFaceHead",
    "CentroidHead",
    "CosFaceHead",
    "CosineHead",
    "MarginHead",
    "add_class",
    "create_head",
    "drop_last_class",
]
