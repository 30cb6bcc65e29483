"""Where and at what precision a model runs: the one device choice that training and inference share.

`resolve_device` turns a config's device setting into a torch device, `resolve_precision` its
precision setting into the precision a run trains at (`fast_bf16`: whether the device has bf16
matmul kernels), `autocast_for` gives the autocast context of a precision, `training_attention`
picks the attention kernel a training step runs, `row_embedding_update` says whether the
word-embedding table trains row by row, `bf16_training_passes` whether a training step's passes
run on bf16 weights, `packed_dropout_masks` how its dropout masks are drawn, and
`tune_cpu_runtime` sets up the CPU allocator for training.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices with a kernel of its own.

    A CPU needs AVX-512 (oneDNN's bf16 kernels; AMX or AVX512_BF16 make them faster still):
    without it torch falls back to a plain loop, and on an AVX2-only CPU a MiniLM SST step took
    16x as long under bf16 autocast as in fp32 (bench/RESULTS.md, "bf16 on a CPU without
    AVX-512"). A CUDA GPU needs bf16 units (Ampere or newer), not their emulation."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch's own test for its bf16 matmul kernels (the one its matmul dispatch makes)
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(setting: str, device: torch.device) -> str:
    """The precision a run trains at: "bf16" or "fp32" as set, or for "auto" bf16 autocast
    where `device` has fast bf16 matmuls and fp32 where it has not."""
    if setting != "auto":
        return setting
    return "bf16" if fast_bf16(device) else "fp32"


def autocast_for(device: torch.device, precision: str):
    """The autocast context of a resolved precision ("auto" is resolve_precision's to settle)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return nullcontext()
    raise ValueError(f"precision {precision!r}: expected bf16 or fp32")


def training_attention(setting: str, device: torch.device, precision: str) -> str:
    """The Hugging Face attention implementation a training step runs: "sdpa" or "eager".

    On a CPU under bf16 autocast, torch's fused attention kernel (SDPA's flash kernel for the
    CPU) takes 4-7x as long for its backward as the same attention written as matmuls and a
    softmax: 9.5 ms against 2.1 ms per layer for a batch of 16 SST sentences, which made it a
    third of a MiniLM step (bench/RESULTS.md, "Attention on the CPU"). In fp32 and on a GPU the
    fused kernel is the faster one. Prediction keeps SDPA: its forward is as fast as eager's.
    """
    if setting != "auto":
        return setting
    return "eager" if device.type == "cpu" and precision == "bf16" else "sdpa"


def batch_width_multiple(device: torch.device, precision: str) -> int:
    """What a batch's width is rounded up to (powerbert.data.batching pads to it, masked).

    8 on a GPU, whose tensor cores want multiples of 8, and on a CPU under bf16, where oneDNN
    builds its bf16 kernels per shape: about 8 SST widths instead of about 50 trained 3% faster.
    1 on a CPU in fp32, where the columns added are only more work: an SST run trained 7% faster
    at the same dev accuracy without them (bench/RESULTS.md, "Padding batches to a multiple of
    8" and "fp32 on a CPU without AVX-512")."""
    return 1 if device.type == "cpu" and precision == "fp32" else 8


def row_embedding_update(setting: str, device: torch.device) -> bool:
    """Whether the word-embedding table trains from a sparse gradient on the rows a step
    touches (powerbert.training.row_adamw) rather than as one dense tensor. "auto": on a CPU,
    where skipping the dense table's zero fill, norm and AdamW pass trained MiniLM 4-9% faster
    under bf16; on a GPU they cost little, and finding the rows would wait for the device. Not
    the default ("dense"): with packed masks it cost SST 0.8 points (TrainConfig.embedding_update)."""
    if setting != "auto":
        return setting == "rows"
    return device.type == "cpu"


def bf16_training_passes(setting: str, precision: str, device: torch.device) -> bool:
    """Whether a training step's passes run on a bf16 copy of the encoder, with AdamW on the
    fp32 weights (powerbert.training.bf16_passes), rather than on the fp32 weights under
    autocast. "auto": on a CPU under bf16, where a MiniLM SST run trains 5-7% faster that way at
    the same dev accuracy (bench/RESULTS.md, "bf16 passes"); on a GPU autocast stays, as
    bench/gpu_mfu.py has not yet timed both there."""
    if setting != "auto":
        return setting == "bf16"
    return device.type == "cpu" and precision == "bf16"


def packed_dropout_masks(setting: str, device: torch.device) -> bool:
    """Whether a training step draws the encoder's dropout masks four elements to a 64-bit
    random word (powerbert.model.packed_dropout) rather than with torch's dropout. "auto": on a
    CPU, where torch draws one number per element, one thread at a time (15% of a MiniLM SST
    step under bf16; bench/RESULTS.md, "Packed dropout masks"); on a GPU torch's dropout is a
    fused kernel. Not the default ("torch"): with the row-wise table it cost SST 0.8 points
    (TrainConfig.dropout_masks)."""
    if setting != "auto":
        return setting == "packed"
    return device.type == "cpu"


def tune_cpu_runtime() -> None:
    """Make this process's heap keep the memory it frees (Linux, glibc), for CPU training.

    Each step frees and reallocates the same large buffers (activations, gradients). By default
    glibc serves large blocks with mmap and unmaps them when freed, so every page of next step's
    buffers comes back through a page fault: on a small VM, allocating MiniLM's gradients took
    0.5 s that way against 0.06 s from the heap (bench/train_throughput.py --levers measures the
    whole step). Keeping freed memory costs up to the step's peak, which the process needs anyway.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not mallopt(m_mmap_threshold, 1 << 30):  # serve blocks up to 1 GiB from the heap,
        mallopt(m_mmap_threshold, 32 << 20)  # or up to the most an older glibc accepts
    mallopt(m_trim_threshold, (1 << 31) - 1)  # and do not give freed heap back
