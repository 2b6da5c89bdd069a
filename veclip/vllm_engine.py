"""The one place that builds a `vllm.LLM` for a model stage (captioner, rewriter).

    llm = build_llm(folder, device="cpu", options=cfg.rewrite.vllm, dtype=cfg.rewrite.dtype)
    llm = build_llm("llava-hf/llava-1.5-7b-hf", device="cuda:1", options=cfg.caption.vllm, images_per_prompt=1)

It is called inside a loader's `load(device)`, which veclip.inference caches per Python worker and
device (`cached_predictor`): one engine per worker and device, nothing else to cache here.

Knobs (`veclip.config.engine.VllmOptions`) and what this module makes of them:

- CPU (`device == "cpu"`):
  - `cpu_kv_cache_gib` -> the KV cache size, passed exactly as `kv_cache_memory_bytes`; a whole number of
    GiB is also exported as `VLLM_CPU_KVCACHE_SPACE` (vLLM's legacy CPU variable, whole GiB only: it
    would override the exact size, so it is removed for a fractional value) while the engine starts.
  - `gpu_memory_utilization` is NOT taken from the options: on CPU vLLM reads it as the share of SYSTEM
    RAM to reserve (its default 0.92 refuses to start on any machine that runs anything else). It is
    fixed at `CPU_MEMORY_UTILIZATION` (0.15); with an explicit KV size vLLM skips that reservation check.
  - `enforce_eager` null -> eager (torch.compile costs minutes on a few cores).
  - `dtype` null or `auto` -> float32 (the CPU backend's safe dtype; `veclip.devices.auto_dtype`, as the
    hf engine).
- GPU (`device == "cuda:N"`):
  - the engine is pinned to the task's GPU: `CUDA_VISIBLE_DEVICES` is set to that one GPU while the
    engine starts, so the engine's own processes (spawned, they read the variable afresh) see only it.
    N means what torch means in this process: an index into the current `CUDA_VISIBLE_DEVICES` if
    that is set, else the physical GPU id. The variable is restored afterwards, so other models in
    the same Python worker keep their view of the GPUs.
  - `gpu_memory_utilization` from the options (weights + KV cache share of that GPU's memory).
  - `enforce_eager` null -> compiled (CUDA graphs); `dtype` null or `auto` -> vLLM's auto: the
    checkpoint's stored dtype, a float32 checkpoint downcast by the hf engine's rule (bfloat16 on GPUs
    with compute capability 8.0+, else float16; `veclip.devices`).
- Both: `max_model_len`, `max_num_seqs`, automatic prefix caching on.

Process model (measured with vllm-cpu 0.32 on 2 cores, both work inside Spark Python workers):
- CPU: the engine runs IN the calling process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` while it starts,
  unless the environment already sets that variable: then it wins). vLLM's default would start two
  more processes (engine core + model worker), each importing torch and vLLM again, and keep one of
  the task's cores for its scheduler: start 187 s against 86 s in a Spark worker on a loaded machine.
  In-process vLLM changes its host process the way it would change its own worker:
  `torch.set_num_threads` becomes a no-op that warns, and the global random seed is set to 0. The engine
  keeps the torch thread count its process had when it started. A Spark Python worker starts with
  OMP_NUM_THREADS = spark.task.cpus (1 by default), so the stage sets the count first
  (`veclip.inference.fit_cpu_threads` with the plan's `cpu_threads`; by default one engine per executor
  with all its cores, `veclip.model_stage.plan_tasks`).
- GPU: vLLM's default (engine core in a spawned child process), which is what makes the
  CUDA_VISIBLE_DEVICES pinning above work after torch has seen every GPU in this process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Iterator, Optional

from veclip.devices import auto_dtype

log = logging.getLogger(__name__)

GiB = 1 << 30
CPU_MEMORY_UTILIZATION = 0.15   # share of SYSTEM RAM vLLM's CPU backend may reserve; never its 0.92 default
KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"   # read by vLLM only while an engine starts

__all__ = ["CPU_MEMORY_UTILIZATION", "build_llm", "effective_max_len", "engine_settings", "in_process", "shutdown_llm"]


def _default_options():
    from veclip.config.engine import VllmOptions

    return VllmOptions()


def _cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


def pinned_gpu(device: str) -> str:
    """The `CUDA_VISIBLE_DEVICES` value that shows the engine only `device` (torch's meaning of cuda:N)."""
    index = _cuda_index(device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() == "":
        return str(index)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if index >= len(ids):
        raise ValueError(f"device {device}: CUDA_VISIBLE_DEVICES={visible!r} shows only {len(ids)} GPU(s)")
    return ids[index]


def model_max_len(model: str) -> Optional[int]:
    """The longest sequence a local model folder's config.json allows (its text model's
    `max_position_embeddings`, LLaVA's `text_config` included); None for a hub id or no such field."""
    path = os.path.join(model, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        config = json.load(f)
    value = (config.get("text_config") or {}).get("max_position_embeddings") or config.get("max_position_embeddings")
    return int(value) if value else None


def effective_max_len(model: str, options) -> int:
    """`vllm.max_model_len`, lowered to the model's own limit (vLLM refuses a longer one: a small model's
    512 positions against the 2048 default)."""
    limit = model_max_len(model)
    return min(options.max_model_len, limit) if limit else options.max_model_len


def engine_settings(model: str, device: str, options=None, dtype: str = "auto", *, tokenizer: Optional[str] = None,
                    revision: Optional[str] = None, trust_remote_code: bool = False,
                    images_per_prompt: int = 0) -> tuple[dict[str, Any], dict[str, Optional[str]]]:
    """(keyword arguments of `vllm.LLM`, environment variables to set while it starts; None = unset).

    Pure: no engine is started, so the memory bounds can be checked cheaply.
    """
    options = options if options is not None else _default_options()
    on_cpu = not device.startswith("cuda")
    dtype = options.dtype or dtype or "auto"
    if on_cpu and dtype == "auto":
        dtype = auto_dtype(device, bf16_supported=False)
    eager = options.enforce_eager if options.enforce_eager is not None else on_cpu
    kwargs: dict[str, Any] = dict(model=model, tokenizer=tokenizer or model, revision=revision,
                                  trust_remote_code=trust_remote_code, dtype=dtype,
                                  max_model_len=effective_max_len(model, options), max_num_seqs=options.max_num_seqs,
                                  enforce_eager=eager, enable_prefix_caching=True)
    if images_per_prompt:
        kwargs["limit_mm_per_prompt"] = {"image": images_per_prompt}
    env: dict[str, Optional[str]] = {}
    if on_cpu:
        gib = float(options.cpu_kv_cache_gib)
        kwargs["kv_cache_memory_bytes"] = int(gib * GiB)
        kwargs["gpu_memory_utilization"] = CPU_MEMORY_UTILIZATION
        # vLLM's CPU platform overrides kv_cache_memory_bytes with int(VLLM_CPU_KVCACHE_SPACE) GiB.
        env[KVCACHE_ENV] = str(int(gib)) if gib.is_integer() else None
        if MULTIPROCESSING_ENV not in os.environ:
            env[MULTIPROCESSING_ENV] = "0"   # in-process engine (see the module docstring)
    else:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
        env["CUDA_VISIBLE_DEVICES"] = pinned_gpu(device)
    return kwargs, env


def _apply_env(values: dict[str, Optional[str]]) -> None:
    """Set each variable to its value; None unsets it."""
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def _environment(env: dict[str, Optional[str]]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    try:
        _apply_env(env)
        yield
    finally:
        _apply_env(old)


def in_process(env: Optional[dict[str, Optional[str]]] = None) -> bool:
    """Whether vLLM will run its engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    value = (env or {}).get(MULTIPROCESSING_ENV) or os.environ.get(MULTIPROCESSING_ENV, "1")
    return value == "0"


def import_vllm():
    """`vllm`, or an ImportError saying which package provides it (a pinned dependency)."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError("engine: vllm needs the `vllm` package (`vllm-cpu` on CPU machines, `vllm` on GPU "
                          f"clusters), a pinned dependency of this project; it does not import here: {err}") from err
    return vllm


def build_llm(model: str, device: str, options=None, dtype: str = "auto", **settings):
    """A started `vllm.LLM` for `model` (a folder or hub id) on `device`, bounded as `engine_settings` says.

    `settings`: tokenizer, revision, trust_remote_code, images_per_prompt (see `engine_settings`).
    """
    vllm = import_vllm()
    kwargs, env = engine_settings(model, device, options, dtype, **settings)
    if device.startswith("cuda") and in_process(env):
        log.warning("VLLM_ENABLE_V1_MULTIPROCESSING=0 on %s: the engine runs in this process, where "
                    "CUDA_VISIBLE_DEVICES may already be fixed; it uses this process's first visible GPU", device)
    t0 = time.monotonic()
    with _environment(env):
        llm = vllm.LLM(**kwargs)
    log.info("vLLM engine for %s on %s (%s, kv %s, utilisation %.2f, %s) started in %.1fs", model, device,
             kwargs["dtype"], f"{kwargs['kv_cache_memory_bytes'] / GiB:.2f} GiB" if "kv_cache_memory_bytes" in kwargs
             else "auto", kwargs["gpu_memory_utilization"], "in-process" if in_process(env) else "engine processes",
             time.monotonic() - t0)
    return llm


def shutdown_llm(llm) -> None:
    """Stop an engine's processes and free its memory now (tests, benchmarks); workers just exit."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        with contextlib.suppress(Exception):
            core.shutdown()
