"""Dropout whose masks take a quarter of the random draws: four 16-bit slices of each 64-bit draw.

On a CPU torch draws one number from its Mersenne Twister per element for a dropout mask
(`bernoulli_`, about 5 ns an element whatever the dtype, one thread at a time): 15% of a MiniLM
SST training step, more than any kernel but the matmuls (bench/RESULTS.md, "Packed dropout
masks"). `packed_dropout` draws a quarter as many 64-bit words from the same generator and
keeps an element where its 16-bit slice falls under (1 - p) of the range: the draws cost a
seventh of `bernoulli_`'s, a dropout's forward and backward less than half. Each element is
kept with probability (1 - p) to within 2^-17 and scaled by 1 / (1 - p), as torch's dropout
does; the draws come from torch's default generator, so a seed and a saved RNG state give the
same masks again. `use_packed_dropout` puts it in an encoder's dropout modules and, for BERT,
in its attention's dropout too.
"""

from __future__ import annotations

import torch
from torch import nn

# The attention implementation registered with transformers: its eager attention, with the
# attention probabilities' dropout drawn by packed_dropout.
PACKED_EAGER = "powerbert_eager_packed_dropout"
_SLICES = 65536  # the values of one 16-bit slice


def packed_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout(x, p, training)`, its mask drawn four elements to a 64-bit word."""
    if not training or p == 0:
        return x
    kept = round((1 - p) * _SLICES)
    if kept >= _SLICES:  # p under 2^-17: no slice falls outside the kept range
        return x
    if kept == 0:
        return x * 0
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    keep = words.view(torch.int16)[: x.numel()].view(x.shape) < kept - _SLICES // 2
    # The scaled mask in x's dtype, as torch's dropout makes it: a bool mask would be converted
    # again by the forward's multiply and again by the backward's.
    return x * keep.to(x.dtype).mul_(1 / (1 - p))


class PackedDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same place in the module tree) drawing its masks with `packed_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_dropout(x, self.p, self.training)


def _eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs):
    """BERT's eager attention (transformers.models.bert.modeling_bert.eager_attention_forward:
    matmuls, the additive mask, a softmax), its dropout drawn by packed_dropout. Written again
    because transformers calls torch's dropout inside it, with no module to swap."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = packed_dropout(torch.softmax(weights, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(PACKED_EAGER, _eager_attention)
    # Without a mask function of its own transformers would hand the attention the raw [batch,
    # length] padding mask; it needs eager's additive [batch, 1, length, length] one.
    AttentionMaskInterface.register(PACKED_EAGER, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def use_packed_dropout(encoder: nn.Module, *more: nn.Module) -> None:
    """Draw every dropout mask of `encoder` (a transformers model, training) and of the modules
    in `more` (layers that run with its configuration: a task's own top layers) with
    packed_dropout: their `nn.Dropout` modules become `PackedDropout`s in the same mode, and a
    BERT encoder running eager attention runs the same attention with packed masks. Other
    attention kernels (SDPA) keep their own dropout."""
    for parent in [m for root in (encoder, *more) for m in root.modules()]:
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                packed = PackedDropout(child.p, child.inplace)
                packed.train(child.training)
                setattr(parent, name, packed)
    config = encoder.config
    if config.model_type == "bert" and config._attn_implementation == "eager":
        _register_attention()
        encoder.set_attn_implementation(PACKED_EAGER)
