"""Checkpoints: safetensors plus JSON, written atomically, never pickle.

A run folder holds:
  best.safetensors + best.json   the best epoch's weights and the config to rebuild the model
  last.safetensors               everything needed to resume: weights, optimizer moments, the
                                 torch RNG state, and (in the safetensors metadata) step, epoch,
                                 scheduler step, best score so far.
Every file is written to a temporary name in the same folder, flushed to disk, then renamed
over the old one, so a crash leaves either the previous file or the new one, never half of
one. Temporary files a crash left behind are removed by `clean_stale_temporaries`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

if TYPE_CHECKING:
    import torch

# torch is imported where tensors are handled, not here: reading a checkpoint's header (the
# step a stopped run resumes from, shown by `powerbert status`) must not cost torch's import.
TMP_PREFIX = ".tmp-"


from powerbert.errors import CheckpointError, first_line  # noqa: E402,F401 - CheckpointError re-exported


def _write_error(path: Path, exc: BaseException) -> CheckpointError:
    """A failed write (full disk, read-only folder) as one line naming the file: neither
    OSError(28) nor safetensors' own error says which file could not be written."""
    reason = getattr(exc, "strerror", None) or first_line(exc)
    return CheckpointError(f"{path}: cannot write: {reason}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name, dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name, dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    try:
        meta = {"powerbert": json.dumps(metadata or {})}
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, (OSError, SafetensorError)):  # SafetensorError: e.g. "No space left"
            raise _write_error(path, exc) from exc
        raise


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and the PowerBERT metadata of a checkpoint; CheckpointError if unusable."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from exc
    return tensors, meta


def read_metadata(path: Path) -> dict:
    """The PowerBERT metadata of a checkpoint (step, scheduler, best score, ...) from the file's
    JSON header alone: the resume checkpoint of a real model holds hundreds of MB of weights and
    optimizer moments that a caller wanting only the step must not read. CheckpointError if the
    header is unusable or the file is shorter than the header says (a truncated write)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="numpy") as f:  # numpy: reading the header needs no torch
            return json.loads((f.metadata() or {}).get("powerbert", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise _corrupt(path, exc) from exc


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: checkpoint is truncated or corrupt ({exc})")


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint config not found") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint config is unreadable ({exc})") from exc


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files left by a crash mid-write; return what was removed."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(TMP_PREFIX + "*"):
            _remove_quietly(p)
            removed.append(p)
    return removed


def _remove_quietly(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- optimizer state as flat tensors + JSON -------------------------------------------------


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split torch's optimizer state_dict into tensors (for safetensors) and JSON metadata."""
    import torch

    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
