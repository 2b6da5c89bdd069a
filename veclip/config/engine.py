"""Config shared by the model stages: which generation engine runs the model, and vLLM's settings."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from veclip.config.base import Section

Engine = Literal["hf", "vllm"]
ENGINE_DESCRIPTION = ("Generation engine: `hf` (transformers `generate`, fixed batches of `batch_size`; runs "
                      "every model transformers can load) or `vllm` (vLLM: one engine per Spark Python worker and "
                      "device, the whole slice partition submitted at once for continuous batching, paged KV "
                      "cache, prefix caching). Recorded in every row's `generation_params`.")
PARTITIONS_DESCRIPTION = ("Spark tasks per slice (model replicas working at once). Default: one task per "
                          "`batch_size` rows up to the cluster's default parallelism; for the `vllm` rewrite on "
                          "CPU, one engine per executor owning all its cores (two one-thread engines on two "
                          "cores decode slower than one two-thread engine). On CPU the executors' cores are "
                          "shared out between the tasks.")


class VllmOptions(Section):
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=0.98, description="On a GPU: the share of the GPU's "
                                          "memory the engine may take (weights + KV cache). With "
                                          "gpus_per_task < 1, several engines share one GPU: keep the sum below 1.")
    cpu_kv_cache_gib: float = Field(1.0, gt=0.0, le=512, description="On CPU: GiB of system RAM for the KV "
                                    "cache (VLLM_CPU_KVCACHE_SPACE). vLLM's own CPU default reserves 92% of RAM "
                                    "and refuses to start when that much is not free; this bound always applies.")
    max_model_len: int = Field(2048, ge=128, le=131072, description="Longest prompt + output in tokens; "
                               "a longer row fails on its own with an error.")
    max_num_seqs: int = Field(64, ge=1, le=4096, description="Sequences the engine decodes at once.")
    enforce_eager: Optional[bool] = Field(None, description="Skip torch.compile / CUDA graphs (faster start, "
                                          "slower steady state). Null: eager on CPU (compiling costs minutes on "
                                          "few cores), compiled on a GPU.")
    dtype: Optional[Literal["auto", "float32", "bfloat16", "float16"]] = Field(
        None, description="Engine dtype; null: the stage's `dtype` (auto: vLLM's own rule on a GPU, the "
        "checkpoint's dtype with float32 weights cast to bf16, or fp16 without bf16; float32 on CPU).")
