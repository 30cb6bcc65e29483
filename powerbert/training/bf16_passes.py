"""bf16 weights for a training step's passes, fp32 weights for AdamW (mixed precision's master weights).

Under bf16 autocast every matmul casts its fp32 weight and its input to bf16, and the
elementwise work between the matmuls (LayerNorm, GELU, dropout, the residual adds, the casts
themselves) runs on fp32 tensors: twice the bytes. `Bf16Passes` keeps a bf16 copy of the
encoder for the forward and backward passes instead; its bf16 gradients become the fp32
weights' gradients, the step clips them and AdamW updates the fp32 weights as before, and the
copy is refreshed from them. The model itself stays fp32: its checkpoints, its dev scores and
prediction are what they were. The heads and their dropout are the model's own (fp32).
"""

from __future__ import annotations

import copy

import torch

from powerbert.model.multitask import MultitaskBert


class Bf16Passes:
    """A bf16 copy of `model`'s encoder that the training passes run on (`net`), with the fp32
    weights it is copied from."""

    def __init__(self, model: MultitaskBert):
        self.model = model
        # The heads and the head dropout are shared, not copied: they train in fp32 in place.
        # deepcopy with them in its memo copies the rest and draws no random numbers, so a
        # resumed run's dropout masks stay the uninterrupted run's.
        memo = {id(model.heads): model.heads, id(model.dropout): model.dropout}
        self.net: MultitaskBert = copy.deepcopy(model, memo)
        self.net.encoder.to(torch.bfloat16)
        self.net.task_layers.to(torch.bfloat16)
        # The trained encoder weights (any task's own top layers included) and their copies, in
        # the same order (deepcopy keeps it).
        self.pairs = list(zip(model.encoder_parameters(), self.net.encoder_parameters(), strict=True))
        self.table = model.encoder.get_input_embeddings().weight
        self.table_copy = self.net.encoder.get_input_embeddings().weight
        self.dense = [(w, c) for w, c in self.pairs if w is not self.table]

    def follow_mode(self) -> None:
        """The copy in the encoder's mode: its dropout on exactly when the encoder's is."""
        if self.net.encoder.training != self.model.encoder.training:
            self.net.encoder.train(self.model.encoder.training)
            self.net.task_layers.train(self.model.encoder.training)

    def grads_to_weights(self) -> None:
        """The copy's bf16 gradients, as fp32, become the fp32 weights' gradients."""
        for weight, copied in self.pairs:
            if copied.grad is not None:
                weight.grad = copied.grad.float()
                copied.grad = None

    @torch.no_grad()
    def refresh(self, table_rows: torch.Tensor | None) -> None:
        """Copy the fp32 weights, just stepped, into the bf16 copy. `table_rows`: the only
        word-embedding rows the step changed (the table trains by rows), or None for all."""
        if self.dense:
            torch._foreach_copy_([c for _, c in self.dense], [w for w, _ in self.dense])
        if not self.table.requires_grad:
            return
        if table_rows is None:
            self.table_copy.copy_(self.table)
        elif table_rows.numel():
            self.table_copy.index_copy_(0, table_rows, self.table.index_select(0, table_rows).to(self.table_copy.dtype))

