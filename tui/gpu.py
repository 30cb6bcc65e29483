"""GPU memory and utilisation per device, for the experiment view; empty where there is none.

nvidia-smi is asked first: it sees every process's memory and the utilisation, and costs the
dashboard no CUDA context. Without it, torch.cuda.mem_get_info is used if torch is already
imported and sees a GPU (memory only). No GPU at all: an empty list, and the panel hides.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

GIB = 1024**3


@dataclass
class GpuStat:
    index: int
    name: str
    used: float  # bytes
    total: float  # bytes
    utilisation: float | None  # percent, None when unknown


def probe_gpus() -> list[GpuStat]:
    """The current state of every visible GPU; [] when there is none or nothing can tell."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            return _from_nvidia_smi(smi)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return _from_torch()


def _from_nvidia_smi(smi: str) -> list[GpuStat]:
    out = subprocess.run(
        [smi, "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
         "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=5, check=True,
    ).stdout
    stats = []
    for line in out.strip().splitlines():
        index, name, used, total, util = (part.strip() for part in line.split(","))
        utilisation = None if util in ("[N/A]", "N/A", "") else float(util)
        stats.append(GpuStat(int(index), name, float(used) * 2**20, float(total) * 2**20, utilisation))
    return stats


def _from_torch() -> list[GpuStat]:
    torch = sys.modules.get("torch")  # never import torch just to look: it takes seconds
    if torch is None:
        return []
    try:
        if not torch.cuda.is_available():
            return []
        stats = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            stats.append(GpuStat(i, torch.cuda.get_device_name(i), float(total - free), float(total), None))
        return stats
    except Exception:
        return []


def gpu_line(stat: GpuStat, width: int = 10) -> str:
    """'cuda:0 H100  12.3/79.6 GiB ███░░░░░░░  45%'"""
    share = stat.used / stat.total if stat.total else 0.0
    filled = round(share * width)
    bar = "█" * filled + "░" * (width - filled)
    util = "" if stat.utilisation is None else f" {stat.utilisation:3.0f}%"
    name = stat.name.replace("NVIDIA ", "")
    return f"cuda:{stat.index} {name} {stat.used / GIB:.1f}/{stat.total / GIB:.1f} GiB {bar}{util}"
