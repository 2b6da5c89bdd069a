"""Captioning on vLLM: the same `.caption(images) -> raw texts` as veclip.caption.models.Captioner.

    spec = CaptionerSpec(model="llava-hf/llava-1.5-7b-hf", engine="vllm", vllm=VllmOptions())
    info = describe(spec)                                # the rendered chat prompt, with the image placeholder
    cap = VllmCaptioner(spec, device="cuda:0", prompt_text=info.prompt_text)
    cap.caption([pil_image, ...])                        # one engine call for every image

- Chat VLMs only (LLaVA family, Qwen2-VL, ...: whatever vLLM runs): the prompt is the text rendered
  by the model's chat template (prompt.py), holding the model's image placeholder (`<image>` for
  LLaVA), which vLLM expands into the image's feature tokens. Prompt-free captioners (BLIP,
  VisionEncoderDecoder: prompt_text None) are refused: they need `caption.engine: hf`.
- All images go to vLLM in ONE `generate` call: its scheduler batches them continuously.
- Decoding follows `caption.generate_kwargs` like the hf engine: greedy by default; `do_sample`
  with temperature / top_p / top_k; repetition_penalty; min_new_tokens. Beam search (num_beams > 1)
  and other generate() arguments have no equivalent here and are refused at start.
- The model's generation_config defaults that shape hf's output are honoured the same way:
  `min_new_tokens` (-> min_tokens) and `suppress_tokens` (-> a -100 logit bias).
- BOS: added by the tokenizer unless the rendered prompt already starts with it (as Captioner does).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from veclip.caption.models import CaptionerSpec

log = logging.getLogger(__name__)

__all__ = ["VllmCaptioner", "sampling_settings"]

_SAMPLING_KEYS = {"do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "min_new_tokens",
                  "num_beams", "max_new_tokens", "suppress_tokens"}


def sampling_settings(spec: CaptionerSpec, defaults: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments equivalent to the spec's hf generation settings."""
    kw = dict(defaults or {})
    kw.update(dict(spec.generate_kwargs))
    unknown = sorted(set(dict(spec.generate_kwargs)) - _SAMPLING_KEYS)
    if unknown:
        raise ValueError(f"caption.generate_kwargs {unknown} have no vLLM equivalent; use caption.engine: hf "
                         f"(vLLM supports {sorted(_SAMPLING_KEYS)})")
    if int(kw.get("num_beams", 1) or 1) > 1:
        raise ValueError("caption.generate_kwargs.num_beams > 1 (beam search) is not supported by "
                         "caption.engine: vllm; use caption.engine: hf or greedy/sampled decoding")
    out: dict[str, Any] = {"max_tokens": int(kw.get("max_new_tokens", spec.max_new_tokens)),
                           "repetition_penalty": float(kw.get("repetition_penalty", 1.0) or 1.0),
                           "skip_special_tokens": True}
    if kw.get("min_new_tokens"):
        out["min_tokens"] = int(kw["min_new_tokens"])
    if kw.get("do_sample"):
        out.update(temperature=float(kw.get("temperature", 1.0)), top_p=float(kw.get("top_p", 1.0)),
                   top_k=int(kw.get("top_k", 0) or 0) or -1)
    else:
        out.update(temperature=0.0)
    if kw.get("suppress_tokens"):
        out["logit_bias"] = {int(t): -100.0 for t in kw["suppress_tokens"]}
    return out


def _generation_defaults(spec: CaptionerSpec) -> dict[str, Any]:
    """min_new_tokens and suppress_tokens of the model's generation_config.json (hf's generate applies them)."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(spec.model, **spec.hub_kwargs())
    except OSError:
        return {}
    return {k: getattr(gen, k) for k in ("min_new_tokens", "suppress_tokens") if getattr(gen, k, None)}


class VllmCaptioner:
    """A started vLLM engine for a chat VLM that turns a list of PIL images into raw caption texts."""

    def __init__(self, spec: CaptionerSpec, device: str, prompt_text: Optional[str]):
        from veclip.caption.models import _tokenizer_of, load_processor
        from veclip.vllm_engine import build_llm

        if spec.engine != "vllm":
            raise ValueError(f"VllmCaptioner needs caption.engine: vllm, got {spec.engine!r}")
        if prompt_text is None:
            raise ValueError(f"caption.model {spec.model} is a prompt-free captioner (no chat prompt to give "
                             "vLLM); use caption.engine: hf for it")
        self.spec, self.device, self.prompt_text = spec, device, prompt_text
        tokenizer = _tokenizer_of(spec, load_processor(spec))
        bos = tokenizer.bos_token
        self.add_special_tokens = not (bos and prompt_text.startswith(bos))
        self.sampling = sampling_settings(spec, _generation_defaults(spec))
        self.llm = build_llm(spec.model, device, spec.vllm, spec.dtype, revision=spec.revision,
                             trust_remote_code=spec.trust_remote_code, images_per_prompt=1)
        log.info("captioner %s on vLLM (%s), sampling %s, prompt %r", spec.model, device, self.sampling,
                 prompt_text[:80])

    def caption(self, images: list) -> list[str]:
        """Raw decoded texts, one per image (special tokens skipped, not yet cleaned)."""
        from vllm import SamplingParams

        if not images:
            return []
        requests = [{"prompt": self.prompt_text, "multi_modal_data": {"image": img}} for img in images]
        results = self.llm.generate(requests, SamplingParams(**self.sampling), use_tqdm=False,
                                    tokenization_kwargs={"add_special_tokens": self.add_special_tokens})
        return [r.outputs[0].text for r in results]
