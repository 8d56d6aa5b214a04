"""Semantic cross-entropies: on the rendered target rays (spec 3.2) and on the geo-reasoner's
2-D source-view logits (spec 3.3).

Both are the class-weighted mean ``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` over the labelled
entries, i.e. PyTorch's ``cross_entropy(weight=w, ignore_index=...)`` with mean reduction.
Unlike that function, an input whose entries are all ``ignore_index`` gives a loss of exactly 0
with a zero gradient instead of NaN (0 / 0).

Differences from the reference: the rendered logits enter the CE as they are (the reference
applies a ReLU to its single-point scores first, spec 7.15); class weights are a per-dataset
config list instead of a "background weight" written into entries 0, 1 and C-1, which on Replica
hit blinds and camera rather than wall and floor (spec 7.2).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int64
from torch import Tensor


def class_weight_tensor(
    class_weights: list[float] | None, num_classes: int, device: torch.device
) -> Float[Tensor, " classes"] | None:
    """The config's per-class weights as a float32 tensor; ``None`` means all 1.0.

    Raises ``ValueError`` when the list does not have one non-negative entry per class.
    """
    if class_weights is None:
        return None
    if len(class_weights) != num_classes:
        raise ValueError(
            f"loss.class_weights has {len(class_weights)} entries but the semantic logits have "
            f"{num_classes} classes; give one weight per class (or null for all 1.0)"
        )
    if any(weight < 0 for weight in class_weights):
        raise ValueError(f"loss.class_weights must be non-negative, got {class_weights}")
    return torch.tensor(class_weights, dtype=torch.float32, device=device)


def weighted_cross_entropy(
    logits: Float[Tensor, "n classes *spatial"],
    labels: Int64[Tensor, " n *spatial"],
    class_weights: Float[Tensor, " classes"] | None,
    ignore_index: int,
) -> Float[Tensor, ""]:
    """``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` over entries whose label is not ``ignore_index``.

    Example: 2 classes, weights ``(1, 3)``, logits ``(0, 0)`` for two entries labelled 0 and 1:
    both CE are ``ln 2``, so the loss is ``(1 ln 2 + 3 ln 2) / (1 + 3) = ln 2``.
    All entries ignored (or all of zero weight) -> exactly 0, with a zero gradient.
    """
    logits = logits.float()
    per_entry = F.cross_entropy(
        logits, labels, weight=class_weights, ignore_index=ignore_index, reduction="none"
    )
    labelled = labels != ignore_index
    if class_weights is None:
        denominator = labelled.sum().to(per_entry.dtype)
    else:
        safe_labels = torch.where(labelled, labels, torch.zeros_like(labels))
        denominator = torch.where(labelled, class_weights[safe_labels], 0.0).sum()
    # Ignored entries contribute an exact 0 to the numerator, so 0 / tiny stays 0 (never NaN).
    return per_entry.sum() / denominator.clamp_min(torch.finfo(per_entry.dtype).tiny)


def ray_semantic_loss(
    logits: Float[Tensor, "b rays classes"],
    labels: Int64[Tensor, "b rays"],
    class_weights: Float[Tensor, " classes"] | None,
    ignore_index: int,
) -> Float[Tensor, ""]:
    """Weighted CE of the rendered ray logits against the target labels (spec 3.2)."""
    flat_logits = rearrange(logits, "b rays classes -> (b rays) classes")
    flat_labels = rearrange(labels, "b rays -> (b rays)")
    return weighted_cross_entropy(flat_logits, flat_labels, class_weights, ignore_index)


def source_semantic_loss(
    logits: Float[Tensor, "b v classes h w"],
    labels: Int64[Tensor, "b v h w"],
    class_weights: Float[Tensor, " classes"] | None,
    ignore_index: int,
) -> Float[Tensor, ""]:
    """Weighted CE of the full-resolution 2-D source logits against the source labels (spec 3.3).

    The mean runs over every labelled pixel of every source view of the batch.
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"source_semantic_loss: logits are {tuple(logits.shape[-2:])} pixels but the source "
            f"labels are {tuple(labels.shape[-2:])}; the 2-D logits must be at full resolution"
        )
    flat_logits = rearrange(logits, "b v classes h w -> (b v) classes h w")
    flat_labels = rearrange(labels, "b v h w -> (b v) h w")
    return weighted_cross_entropy(flat_logits, flat_labels, class_weights, ignore_index)
