"""Rewrite: AltText + caption -> VeCap with an instruct LLM (VeCLIP's concept fusion).

    from veclip.rewrite import load_prompt, fuse_prompt, validate, fallback_text, run_rewrite
    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite

Modules: prompt (prompt file, AltText cleaning and quoting, chat template), injection (confusable
folding and instruction patterns in seven languages, for the AltText and the output), validate (output
checks and the fallback rule), models (any causal LM by id or path, GGUF via a cached safetensors copy,
batched generation), rewriter (one batch: prompt -> generate -> validate -> fallback), stage (Spark:
slices, map_batches, MERGE into `vecap`).
"""

from veclip.rewrite.prompt import PromptSpec, clean_for_prompt, fuse_messages, fuse_prompt, load_prompt
from veclip.rewrite.validate import Verdict, fallback_text, validate

__all__ = ["PromptSpec", "Verdict", "clean_for_prompt", "fallback_text", "fuse_messages", "fuse_prompt",
           "load_prompt", "validate", "run_rewrite"]


def __getattr__(name):
    # Imported lazily: Spark workers import this package and need none of the driver's Spark code.
    if name == "run_rewrite":
        from veclip.rewrite.stage import run_rewrite
        return run_rewrite
    raise AttributeError(name)
