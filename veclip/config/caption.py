"""Config of the caption stage (canonical samples -> captions)."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from veclip.config.base import Section
from veclip.config.engine import ENGINE_DESCRIPTION, PARTITIONS_DESCRIPTION, Engine, VllmOptions

PAPER_PROMPT = "Describe the image concisely, less than 20 words."


def slug(model: str) -> str:
    """A short id from a model id or path: `llava-hf/llava-1.5-7b-hf` -> `llava-1.5-7b-hf`."""
    last = model.rstrip("/").split("/")[-1] or model
    return re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-").lower() or "captioner"


class CaptionConfig(Section):
    model: str = Field("llava-hf/llava-1.5-7b-hf", description="Captioning VLM: a Hugging Face model id or a local "
                       "directory (image-text-to-text Auto classes: LLaVA, LLaVA-NeXT, Qwen2-VL, BLIP/BLIP-2, "
                       "VisionEncoderDecoder, ...). The paper uses LLaVA-1.5.")
    captioner_id: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9._:+-]+$", description="Id stored in the `captioner` column (captions are keyed by "
                                        "sample key + captioner id); default: a slug of `model` (its last path part). Two captioners with "
                                        "different ids caption the same rows side by side.")
    revision: Optional[str] = Field(None, description="Model revision (hub branch, tag or commit) to load and record.")
    engine: Engine = Field("hf", description=ENGINE_DESCRIPTION + " vLLM runs LLaVA-family and Qwen2-VL chat "
                           "VLMs; prompt-free captioners (BLIP, VisionEncoderDecoder) need `hf`.")
    vllm: VllmOptions = Field(default_factory=VllmOptions, description="vLLM engine settings (engine: vllm).")
    prompt: Optional[str] = Field(PAPER_PROMPT, description="Instruction for chat VLMs, rendered with the model's chat "
                                  "template (the paper's by default). Prompt-free captioners (BLIP, "
                                  "VisionEncoderDecoder) ignore it and record no prompt.")
    max_new_tokens: int = Field(40, ge=1, le=1024, description="Most tokens generated per caption.")
    generate_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra `generate()` arguments, e.g. "
                                            "{num_beams: 3} or {do_sample: true, temperature: 0.7}; default: greedy "
                                            "decoding. Recorded in `generation_params`.")
    batch_size: int = Field(8, ge=1, description="Images per `generate()` call (a batch that fails, e.g. CUDA "
                            "out-of-memory, is split in halves and retried).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Model weights dtype; `auto` is bfloat16 on a GPU with native bf16, float16 on an "
        "older GPU, float32 on CPU.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off unless you trust the model.")
    max_chars: int = Field(300, ge=16, description="Cleaned captions are cut (at a word boundary) to this many characters.")
    commit_every: int = Field(2000, ge=1, description="Rows captioned between two MERGEs into the captions table: "
                              "a killed job loses at most one slice. The to-do rows are snapshotted once per run, "
                              "sorted by slice, so a slice reads only its own rows whatever the crawl size.")
    max_failure_rate: float = Field(0.5, ge=0.0, le=1.0, description="Failure-storm ceiling: when more than "
                                    "this share of one run's rows fail (undecodable image, empty caption, a batch failing even at one row: CUDA fault, out of memory), the stage raises an error (checked "
                                    "after each slice from 1000 rows on, and at the end), so the job exits non-zero and gold "
                                    "is not rebuilt. The failed rows stay as error rows for `--retry-errors`. 1.0: no ceiling.")
    partitions: Optional[int] = Field(None, ge=1, description=PARTITIONS_DESCRIPTION)
    gpus_per_task: float = Field(0.0, ge=0, description="GPUs each Spark task asks for (stage-level scheduling on a "
                                 "cluster, like spark.task.resource.gpu.amount); 0 runs on whatever the task has "
                                 "(its assigned GPU, else the CPU).")

    @model_validator(mode="before")
    @classmethod
    def _default_captioner_id(cls, data):
        # Resolved once at load time so every stage reading `captioner_id` agrees on it.
        if isinstance(data, dict) and not data.get("captioner_id"):
            data = {**data, "captioner_id": slug(str(data.get("model") or cls.model_fields["model"].default))}
        return data

    @property
    def captioner(self) -> str:
        return self.captioner_id or slug(self.model)
