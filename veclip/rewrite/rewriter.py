"""One batch of (alt_text, caption) rows -> VeCaps: prompt, generate, validate, fall back.

    loader = RewriterLoader.from_config(cfg)            # picklable: shipped to Spark workers
    predict = loader("cpu")                             # loads the model (once per worker, via inference)
    predict(pd.DataFrame({"alt_text": [...], "caption": [...]}))   # -> one JSON string per row

Each output is `{"vecap": str, "fallback_used": bool, "reason": str | null}` (reason: why the LLM
output was refused, or `no_alt_text` when there was nothing to fuse and the model was not asked).
The batch goes through `veclip.inference.map_batches` in Spark and through `rewrite_frame` in the
standalone benchmark: the same code either way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from veclip.rewrite.models import CausalLM, ModelSource, load_causal_lm
from veclip.rewrite.prompt import PromptSpec, clean_for_prompt, fuse_messages, load_prompt, render
from veclip.rewrite.validate import fallback_text, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def as_json(self, **extra) -> str:
        d = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
             "do_sample": self.temperature > 0, "repetition_penalty": self.repetition_penalty}
        if self.temperature > 0:
            d["top_p"] = self.top_p
        return json.dumps({**d, **extra}, sort_keys=True)


@dataclass(frozen=True)
class Bounds:
    alt_text_max_chars: int = 300
    caption_max_chars: int = 300
    max_clip_tokens: int = 77


@dataclass(frozen=True)
class RewriterLoader:
    """Everything a worker needs to rewrite: model source, prompt (already read), parameters."""

    source: ModelSource
    models_dir: str
    spec: PromptSpec
    params: GenerationParams = field(default_factory=GenerationParams)
    bounds: Bounds = field(default_factory=Bounds)
    dtype: str = "auto"

    @classmethod
    def from_config(cls, cfg) -> "RewriterLoader":
        r = cfg.rewrite
        return cls(source=ModelSource(r.model, r.gguf_file, r.revision, r.trust_remote_code),
                   models_dir=cfg.paths.models_dir, spec=load_prompt(r.prompt_file),
                   params=GenerationParams(r.max_new_tokens, r.temperature, r.top_p, r.repetition_penalty),
                   bounds=Bounds(r.alt_text_max_chars, r.caption_max_chars, r.max_clip_tokens), dtype=r.dtype)

    def __call__(self, device: str) -> "Rewriter":
        return Rewriter(load_causal_lm(self.source, self.models_dir, device, self.dtype), self)


class Rewriter:
    """The per-worker predictor: `predict(batch)` returns one JSON result per row."""

    def __init__(self, lm: CausalLM, loader: RewriterLoader):
        self.lm, self.spec, self.params, self.bounds = lm, loader.spec, loader.params, loader.bounds
        # Instruction + few-shot turns: the same for every sample, so encoded once (KV cache).
        self.prefix = lm.cacheable_prefix([self.prompt("a", "b"), self.prompt("c", "d")])

    def __call__(self, batch: pd.DataFrame) -> list:
        results = self.rewrite(list(batch["alt_text"]), list(batch["caption"]))
        return [json.dumps(r) if isinstance(r, dict) else r for r in results]

    def prompt(self, alt: Optional[str], cap: str) -> str:
        return render(self.lm.tokenizer, self.spec, fuse_messages(self.spec, alt, cap))

    def rewrite(self, alt_texts: list[Optional[str]], captions: list[Optional[str]]) -> list:
        """One result dict per row; a row without caption text gets a ValueError (its `error`)."""
        b = self.bounds
        alts = [clean_for_prompt(a, b.alt_text_max_chars) for a in alt_texts]
        caps = [clean_for_prompt(c, b.caption_max_chars) for c in captions]
        results: list = [None] * len(alts)
        ask = [i for i, (a, c) in enumerate(zip(alts, caps)) if a and c]
        for i, (a, c) in enumerate(zip(alts, caps)):
            if not c:
                results[i] = ValueError("rewrite: no caption text (caption empty after cleaning)")
            elif not a:
                results[i] = {"vecap": fallback_text(c, None, b.max_clip_tokens), "fallback_used": True,
                              "reason": "no_alt_text"}
        if ask:
            p = self.params
            gens = self.lm.generate([self.prompt(alts[i], caps[i]) for i in ask], p.max_new_tokens,
                                    p.temperature, p.top_p, p.repetition_penalty, prefix=self.prefix)
            for i, g in zip(ask, gens):
                results[i] = self.judge(g.text, alts[i], caps[i], g.truncated)
        return results

    def judge(self, output: str, alt: str, cap: str, truncated: bool) -> dict:
        b = self.bounds
        v = validate(output, alt, cap, self.spec, b.max_clip_tokens, self.lm.special_tokens, truncated)
        if v.ok:
            return {"vecap": v.text, "fallback_used": False, "reason": None}
        return {"vecap": fallback_text(cap, alt, b.max_clip_tokens), "fallback_used": True, "reason": v.reason}


def rewrite_frame(rewriter: Rewriter, df: pd.DataFrame, batch_size: int) -> list[dict]:
    """Standalone (no Spark): rewrite a DataFrame with alt_text/caption columns in batches."""
    out: list[dict] = []
    for i in range(0, len(df), batch_size):
        chunk = df.iloc[i:i + batch_size]
        out.extend(rewriter.rewrite(list(chunk["alt_text"]), list(chunk["caption"])))
    return out
