"""One batch of (alt_text, caption) rows -> VeCaps: prompt, generate n candidates, validate, choose, fall back.

    loader = RewriterLoader.from_config(cfg)            # picklable: shipped to Spark workers
    predict = loader("cpu")                             # loads the model (once per worker, via inference)
    predict(pd.DataFrame({"alt_text": [...], "caption": [...]}))   # -> one JSON string per row

Each output is a JSON object:

| key | value |
| --- | --- |
| vecap | the VeCap: the chosen LLM candidate, or the documented fallback |
| fallback_used | True when no candidate passed `validate` (or the model was not asked) |
| reason | why candidate 0 was refused (the same as with n=1), or `no_alt_text` when there was nothing to fuse and the model was not asked; null for an LLM VeCap |
| candidates | how many candidates were generated for the row (`rewrite.num_candidates`; 0 when not asked) |
| chosen | index of the winning candidate (0 = the answer at `rewrite.temperature`), null for a fallback |
| alt_text_in_fallback | whether the fallback kept any AltText words (`rewrite.fallback_alt_text`); False for an LLM VeCap |

Best-of-n (`rewrite.num_candidates` = n > 1): candidate 0 is `generate` at `rewrite.temperature` (greedy by
default: exactly the n=1 answer), candidates 1..n-1 come from `generate_n` at `rewrite.candidate_temperature`;
each is validated and the best valid one is chosen by `veclip.rewrite.select.choose`. The fallback is used
only when none passes. An input column `alt_text_low_info` (dedupe's flag), when the batch has it, keeps a
flagged AltText out of the informative fallback.

Engines: `hf` (transformers, `CausalLM`, batches of `batch_size`) or `vllm` (`veclip.rewrite.vllm_lm`,
imported only then; the predictor asks `veclip.inference` for whole partitions: `whole_partition`).
The batch goes through `veclip.inference.map_batches` in Spark and through `rewrite_frame` in the
standalone benchmark: the same code either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

import pandas as pd

from veclip.config.rewrite import RewriteConfig
from veclip.engines import engine_version
from veclip.rewrite.models import CausalLM, Generation, ModelSource, load_causal_lm
from veclip.rewrite.prompt import PromptSpec, clean_for_prompt, fuse_messages, load_prompt, render
from veclip.rewrite.select import choose
from veclip.rewrite.validate import Verdict, fallback_alt, fallback_text, validate


@dataclass(frozen=True)
class RewriterLoader:
    """Everything a worker needs to rewrite: the `rewrite` config section (generation parameters,
    bounds, engine, fallback mode), the model source, the model cache and the prompt (already read)."""

    config: RewriteConfig
    source: ModelSource
    models_dir: str
    spec: PromptSpec

    @classmethod
    def from_config(cls, cfg) -> "RewriterLoader":
        r = cfg.rewrite
        return cls(config=r, source=ModelSource.from_config(r), models_dir=cfg.paths.models_dir,
                   spec=load_prompt(r.prompt_file))

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def num_candidates(self) -> int:
        return self.config.num_candidates

    @property
    def candidate_temperature(self) -> float:
        return self.config.candidate_temperature

    def params_json(self, **extra) -> str:
        """The `generation_params` JSON: the generation settings, the engine and its version, the fallback
        mode, vLLM's settings on vllm; top_p only where it acts (sampling or n > 1), the candidates'
        temperature only with n > 1; then `extra`."""
        r = self.config
        d = {"max_new_tokens": r.max_new_tokens, "temperature": r.temperature, "do_sample": r.temperature > 0,
             "repetition_penalty": r.repetition_penalty, "engine": r.engine,
             "engine_version": engine_version(r.engine), "num_candidates": r.num_candidates,
             "fallback_alt_text": r.fallback_alt_text}
        if r.temperature > 0 or r.num_candidates > 1:
            d["top_p"] = r.top_p
        if r.num_candidates > 1:
            d["candidate_temperature"] = r.candidate_temperature
        if r.engine == "vllm":
            d["vllm"] = r.vllm.model_dump()
        return json.dumps({**d, **extra}, sort_keys=True)

    def load_lm(self, device: str):
        if self.engine == "vllm":
            from veclip.rewrite.vllm_lm import load_vllm_lm   # heavy: only when asked for

            return load_vllm_lm(self.source, self.models_dir, device, self.config.dtype, self.config.vllm)
        return load_causal_lm(self.source, self.models_dir, device, self.config.dtype)

    def __call__(self, device: str) -> "Rewriter":
        return Rewriter(self.load_lm(device), self)


def _flags(low_info: Optional[Sequence], n: int) -> list[bool]:
    """dedupe's `alt_text_low_info` per row; a missing column or a null value reads as False."""
    if low_info is None:
        return [False] * n
    return [False if x is None or pd.isna(x) else bool(x) for x in low_info]


def judge_candidates(outputs: Sequence[Generation], alt: str, cap: str, spec: Optional[PromptSpec],
                     cfg: RewriteConfig, special_tokens: Sequence[str] = (),
                     low_info: bool = False) -> tuple[dict, list[Verdict]]:
    """(result dict, each candidate's Verdict) for one row's candidates: the best valid one, else the fallback
    (`cfg.fallback_alt_text`). Pure: no model. `alt`/`cap` are the cleaned texts the prompt quoted."""
    verdicts = [validate(g.text, alt, cap, spec, cfg.max_clip_tokens, special_tokens, g.truncated) for g in outputs]
    chosen = choose([v.text if v.ok else None for v in verdicts], alt, cap, low_info)
    if chosen is not None:
        return ({"vecap": verdicts[chosen].text, "fallback_used": False, "reason": None,
                 "candidates": len(outputs), "chosen": chosen, "alt_text_in_fallback": False}, verdicts)
    vecap, kept = fallback(cap, alt, cfg, low_info)
    return ({"vecap": vecap, "fallback_used": True, "reason": verdicts[0].reason if verdicts else "empty",
             "candidates": len(outputs), "chosen": None, "alt_text_in_fallback": kept}, verdicts)


def fallback(cap: str, alt: Optional[str], cfg: RewriteConfig, low_info: bool = False,
             mode: Optional[str] = None) -> tuple[str, bool]:
    """(the fallback VeCap, whether it kept any AltText words) under `mode` (default:
    `cfg.fallback_alt_text`), within `cfg`'s bounds."""
    alt_part = fallback_alt(alt, mode or cfg.fallback_alt_text, low_info, cfg.alt_text_max_chars)
    text = fallback_text(cap, alt_part, cfg.max_clip_tokens)
    return text, text != fallback_text(cap, None, cfg.max_clip_tokens)


class Rewriter:
    """The per-worker predictor: `predict(batch)` returns one JSON result per row."""

    def __init__(self, lm: CausalLM, loader: RewriterLoader):
        self.lm, self.spec, self.config = lm, loader.spec, loader.config
        # vLLM batches continuously: veclip.inference hands it a whole partition at once.
        self.whole_partition = loader.engine == "vllm"
        # Instruction + few-shot turns: the same for every sample, so encoded once (KV cache).
        self.prefix = lm.cacheable_prefix([self.prompt("a", "b"), self.prompt("c", "d")])

    def __call__(self, batch: pd.DataFrame) -> list:
        low = list(batch["alt_text_low_info"]) if "alt_text_low_info" in batch.columns else None
        results = self.rewrite(list(batch["alt_text"]), list(batch["caption"]), low)
        return [json.dumps(r) if isinstance(r, dict) else r for r in results]

    def prompt(self, alt: Optional[str], cap: str) -> str:
        return render(self.lm.tokenizer, self.spec, fuse_messages(self.spec, alt, cap))

    def candidates(self, prompts: list[str]) -> list[list[Generation]]:
        """Per prompt: candidate 0 at `temperature`, then num_candidates - 1 sampled at candidate_temperature."""
        p = self.config
        first = self.lm.generate(prompts, p.max_new_tokens, p.temperature, p.top_p, p.repetition_penalty,
                                 prefix=self.prefix)
        if p.num_candidates <= 1:
            return [[g] for g in first]
        rest = self.lm.generate_n(prompts, p.num_candidates - 1, p.max_new_tokens, p.candidate_temperature,
                                  p.top_p, p.repetition_penalty, prefix=self.prefix)
        if len(rest) != len(prompts) or any(len(r) != p.num_candidates - 1 for r in rest):
            raise RuntimeError(f"generate_n returned {[len(r) for r in rest]} candidates for {len(prompts)} "
                               f"prompts, expected {p.num_candidates - 1} each")
        return [[g, *r] for g, r in zip(first, rest)]

    def rewrite(self, alt_texts: list[Optional[str]], captions: list[Optional[str]],
                low_info: Optional[Sequence] = None, return_candidates: bool = False):
        """One result dict per row; a row without caption text gets a ValueError (its `error`).
        `low_info`: dedupe's alt_text_low_info per row (None: all False). With `return_candidates`,
        (results, per row the list of candidate Generations, or None when the model was not asked)."""
        b = self.config
        alts = [clean_for_prompt(a, b.alt_text_max_chars) for a in alt_texts]
        caps = [clean_for_prompt(c, b.caption_max_chars) for c in captions]
        lows = _flags(low_info, len(alts))
        results: list = [None] * len(alts)
        gens_of: list = [None] * len(alts)
        ask = [i for i, (a, c) in enumerate(zip(alts, caps)) if a and c]
        for i, (a, c) in enumerate(zip(alts, caps)):
            if not c:
                results[i] = ValueError("rewrite: no caption text (caption empty after cleaning)")
            elif not a:
                results[i] = {"vecap": fallback_text(c, None, b.max_clip_tokens), "fallback_used": True,
                              "reason": "no_alt_text", "candidates": 0, "chosen": None,
                              "alt_text_in_fallback": False}
        if ask:
            cands = self.candidates([self.prompt(alts[i], caps[i]) for i in ask])
            for i, gens in zip(ask, cands):
                results[i] = self.judge_candidates(gens, alts[i], caps[i], lows[i])
                gens_of[i] = gens
        return (results, gens_of) if return_candidates else results

    def judge_candidates(self, gens: Sequence[Generation], alt: str, cap: str, low_info: bool = False) -> dict:
        return judge_candidates(gens, alt, cap, self.spec, self.config, self.lm.special_tokens, low_info)[0]

    def judge(self, output: str, alt: str, cap: str, truncated: bool, low_info: bool = False) -> dict:
        """One output (n=1): its VeCap, or the fallback."""
        return self.judge_candidates([Generation(output, 0, truncated)], alt, cap, low_info)


def rewrite_frame(rewriter: Rewriter, df: pd.DataFrame, batch_size: int) -> list[dict]:
    """Standalone (no Spark): rewrite a DataFrame with alt_text/caption columns (and optionally
    alt_text_low_info) in batches; a whole-partition engine (vllm) gets the whole frame at once."""
    if getattr(rewriter, "whole_partition", False):
        batch_size = max(len(df), 1)
    out: list[dict] = []
    for i in range(0, len(df), batch_size):
        chunk = df.iloc[i:i + batch_size]
        low = list(chunk["alt_text_low_info"]) if "alt_text_low_info" in chunk.columns else None
        out.extend(rewriter.rewrite(list(chunk["alt_text"]), list(chunk["caption"]), low))
    return out
