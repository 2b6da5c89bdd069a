"""Where a model runs and in which dtype: the one rule for `device: auto` and `dtype: auto`.

    device = pick_device("auto")            # the Spark task's GPU, else the first GPU, else "cpu"
    auto_dtype("cuda:0", bf16_supported=False)   # -> "float16" (pure: the rule itself)
    dtype = torch_dtype("auto", device)     # torch.bfloat16 / torch.float16 / torch.float32

`dtype: auto` is bfloat16 on a CUDA device that supports it natively (compute capability 8.0 and
up: Ampere, Hopper), float16 on older CUDA devices, float32 on the CPU. vLLM's own `auto` on a GPU
(`veclip.vllm_engine` passes it through) takes the checkpoint's stored dtype instead, downcasting a
float32 checkpoint by this same rule.

torch is imported only when needed, and for `device: auto` only where an NVIDIA device node exists,
so CPU workers stay light.
"""

from __future__ import annotations

import os

DTYPES = ("auto", "float32", "bfloat16", "float16")


def task_device() -> str:
    """The device of the current Spark task: its assigned GPU, else the first GPU, else CPU."""
    if not os.path.exists("/dev/nvidiactl"):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    return f"cuda:{gpus.addresses[0]}" if gpus is not None and gpus.addresses else "cuda:0"


def pick_device(setting: str = "auto") -> str:
    """`setting` itself (`cpu`, `cuda`, `cuda:N`), or for `auto` the task's device (`task_device`)."""
    return task_device() if setting == "auto" else setting


def auto_dtype(device: str, bf16_supported: bool) -> str:
    """What `dtype: auto` means on `device`: bfloat16 on a CUDA device that supports it, float16 on
    another CUDA device, float32 anywhere else."""
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if bf16_supported else "float16"


def bf16_supported(device: str) -> bool:
    """Whether CUDA device `device` computes in bfloat16 natively (not emulated: torch's default check
    says yes on pre-Ampere GPUs, where bfloat16 is emulated and slow)."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def dtype_name(name: str, device: str) -> str:
    """The dtype setting `name` (one of DTYPES) on `device`, with `auto` resolved."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return auto_dtype(device, bf16_supported(device)) if name == "auto" else name


def torch_dtype(name: str, device: str):
    """The torch dtype of setting `name` on `device` (see `dtype_name`)."""
    import torch

    return getattr(torch, dtype_name(name, device))
