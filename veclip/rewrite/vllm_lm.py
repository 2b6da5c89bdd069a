"""The rewrite LLM on vLLM: the same interface as veclip.rewrite.models.CausalLM, one engine call per batch.

    lm = load_vllm_lm(ModelSource.from_config(cfg.rewrite), models_dir, device="cpu", dtype="auto",
                      options=cfg.rewrite.vllm)
    lm.generate(prompts, max_new_tokens=48)                   # -> [Generation(text, tokens, truncated)]
    lm.generate_n(prompts, n=4, max_new_tokens=48, temperature=0.7)   # -> [[Generation] * 4 per prompt]

- The model folder is resolved exactly as load_causal_lm does; a GGUF source is read from its
  dequantised safetensors copy (prepare_gguf): vLLM does not read the GGUF file itself.
- Prompts are tokenized here, with the HF tokenizer and the same BOS rule as CausalLM, and handed to
  vLLM as token ids: both engines see the same tokens, and the lengths are known before submitting.
- All prompts go to vLLM in ONE `generate` call, so its scheduler batches them continuously; the
  shared few-shot prefix is cached by vLLM's automatic prefix caching (`cacheable_prefix` returns None
  and `prefix` is ignored).
- Stops at the same end-of-turn tokens as CausalLM; the text is decoded here with the same
  `decode(skip_special_tokens=True).strip()`; `truncated` is vLLM's finish_reason == "length".
- Too-long prompts: vLLM validates every prompt of a call before running any and raises
  (VLLMValidationError, "maximum context length") for the WHOLE call if one prompt has max_model_len
  tokens or more. So the lengths are checked here first and `PromptTooLong` is raised BEFORE anything
  is submitted: veclip.inference splits the batch in halves until that row fails on its own (its
  `error`: "PromptTooLong: ..."). The failed attempts cost a tokenization each, no generation; every
  other row is generated once. A prompt that fits but leaves fewer than max_new_tokens gets only what
  is left (vLLM itself would stop there too) and is reported truncated.
- No per-request seeds: vLLM's CPU backend refuses them ("CPU Generator does not use offset").
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

from veclip.rewrite.models import Generation, ModelSource, prepare_gguf, stop_ids

log = logging.getLogger(__name__)

__all__ = ["PromptTooLong", "VllmLM", "load_vllm_lm", "model_folder"]


class PromptTooLong(ValueError):
    """A prompt with max_model_len tokens or more: vLLM would refuse the whole call for it."""


class VllmLM:
    """A started vLLM engine and the model's HF tokenizer, with CausalLM's generation interface."""

    def __init__(self, llm, tokenizer, device: str, max_model_len: int, eos_token_ids: Sequence[int] = ()):
        self.llm, self.tokenizer, self.device, self.max_model_len = llm, tokenizer, device, max_model_len
        self.stop_ids = sorted(stop_ids(self.tokenizer, list(eos_token_ids)))


    @property
    def special_tokens(self) -> list[str]:
        return [t for t in self.tokenizer.all_special_tokens if t]

    def cacheable_prefix(self, prompts: Sequence[str]) -> None:
        """None: vLLM caches shared prefixes by itself (automatic prefix caching)."""
        return None

    def _add_bos(self, texts: Sequence[str]) -> bool:
        bos = self.tokenizer.bos_token
        return not (bos and all(t.startswith(bos) for t in texts))

    def _token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        add = self._add_bos(prompts)
        return [self.tokenizer(p, add_special_tokens=add)["input_ids"] for p in prompts]

    def _params(self, n: int, max_tokens: int, temperature: float, top_p: float, repetition_penalty: float):
        from vllm import SamplingParams

        sample = temperature > 0
        return SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature if sample else 0.0,
                              top_p=top_p if sample else 1.0, repetition_penalty=repetition_penalty,
                              stop_token_ids=self.stop_ids, skip_special_tokens=True)

    def _generation(self, completion) -> Generation:
        ids = list(completion.token_ids)
        stops = set(self.stop_ids)
        end = next((i for i, t in enumerate(ids) if t in stops), None)
        body = ids if end is None else ids[:end]
        text = self.tokenizer.decode(body, skip_special_tokens=True).strip()
        return Generation(text, len(body), completion.finish_reason == "length")

    def _run(self, prompts: Sequence[str], n: int, max_new_tokens: int, temperature: float, top_p: float,
             repetition_penalty: float) -> list[list[Generation]]:
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        ids = self._token_ids(prompts)
        too_long = [len(t) for t in ids if len(t) >= self.max_model_len]
        if too_long:
            where = "a prompt has" if len(prompts) == 1 else f"{len(too_long)} of {len(prompts)} prompts have"
            raise PromptTooLong(f"{where} {max(too_long)} tokens; vllm.max_model_len={self.max_model_len} leaves no "
                                f"room for output (raise rewrite.vllm.max_model_len, or shorten the prompt)")
        params = [self._params(n, min(max_new_tokens, self.max_model_len - len(t)), temperature, top_p,
                               repetition_penalty) for t in ids]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in ids], params, use_tqdm=False)
        if len(results) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(results)} results for {len(prompts)} prompts")
        return [[self._generation(c) for c in r.outputs] for r in results]

    def generate(self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, prefix: Optional[str] = None) -> list[Generation]:
        """One Generation per prompt (greedy unless temperature > 0), all prompts in one engine call.
        Raises PromptTooLong (nothing generated) if any prompt leaves no room within max_model_len."""
        return [r[0] for r in self._run(prompts, 1, max_new_tokens, temperature, top_p, repetition_penalty)]

    def generate_n(self, prompts: Sequence[str], n: int, max_new_tokens: int, temperature: float,
                   top_p: float = 1.0, repetition_penalty: float = 1.0,
                   prefix: Optional[str] = None) -> list[list[Generation]]:
        """`n` sampled Generations per prompt (vLLM `SamplingParams(n=n)`: the prompt is encoded once).

        n == 1 is `generate` (greedy when temperature is 0); n > 1 needs temperature > 0.
        """
        if n < 1:
            raise ValueError(f"generate_n: n must be >= 1, got {n}")
        if n > 1 and temperature <= 0:
            raise ValueError(f"generate_n: {n} samples per prompt need temperature > 0, got {temperature}")
        return self._run(prompts, n, max_new_tokens, temperature, top_p, repetition_penalty)


def model_folder(source: ModelSource, models_dir: str) -> tuple[str, Optional[str]]:
    """(folder or hub id vLLM loads, revision) exactly as load_causal_lm resolves it (GGUF: its safetensors copy)."""
    folder, gguf = source.location()
    if gguf:
        return prepare_gguf(folder, gguf, models_dir, source.revision), None
    return folder, source.revision


def load_vllm_lm(source: ModelSource, models_dir: str, device: str, dtype: str = "auto", options=None) -> VllmLM:
    """A vLLM engine (veclip.vllm_engine.build_llm) on `device` for the rewrite model, and its tokenizer."""
    from transformers import AutoTokenizer

    from veclip.config.engine import VllmOptions
    from veclip.vllm_engine import build_llm, effective_max_len

    options = options if options is not None else VllmOptions()
    folder, revision = model_folder(source, models_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision, trust_remote_code=source.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    llm = build_llm(folder, device, options, dtype, revision=revision, trust_remote_code=source.trust_remote_code)
    eos = _generation_eos(folder, revision, source.trust_remote_code)
    max_len = effective_max_len(folder, options)
    log.info("rewrite LM %s on vLLM (%s), max_model_len %d", os.path.basename(folder.rstrip("/")) or folder,
             device, max_len)
    return VllmLM(llm, tokenizer, device, max_len, eos)


def _generation_eos(folder: str, revision: Optional[str], trust_remote_code: bool) -> list[int]:
    """The EOS ids of the model's generation config (CausalLM reads model.generation_config the same way)."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(folder, revision=revision, trust_remote_code=trust_remote_code)
    except OSError:  # no generation_config.json: the tokenizer's EOS and end-of-turn tokens still apply
        return []
    eos = gen.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
