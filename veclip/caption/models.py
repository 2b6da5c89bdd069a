"""Loading any Hugging Face captioning VLM and captioning a batch of images with it.

    spec = CaptionerSpec.from_config(cfg.caption)    # caption.model, e.g. llava-hf/llava-1.5-7b-hf
    info = describe(spec)                       # driver side: model type, rendered prompt, revision
    cap = Captioner(spec, device="cuda:0", prompt_text=info.prompt_text)
    cap.caption([pil_image, ...])               # raw decoded texts (clean them with clean.py)

One path for every family, through the Auto classes for image-text-to-text:
- chat VLMs (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Idefics, ...): the prompt is rendered with the model's
  chat template (prompt.py) and the batch is tokenized with LEFT padding, so every row's generated
  tokens start at the same position; the prompt tokens are cut off the output;
- prompt-free captioners (BLIP, BLIP-2, VisionEncoderDecoder, GIT): images only.
`trust_remote_code` stays off unless the config turns it on; safetensors weights are preferred
whenever a model offers them (transformers' default). dtype `auto` (veclip.devices): bf16 on a GPU
that has it natively, else fp16; fp32 on CPU.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Optional

from veclip.caption.prompt import render_prompt
from veclip.config.caption import CaptionConfig
from veclip.devices import torch_dtype

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CaptionerSpec:
    """Everything needed to load a captioner and generate with it: the model fields of the `caption`
    config section, built by `from_config` (picklable, shipped to workers; hashable, and its repr keys
    the workers' model cache, so it holds only what shapes the loaded model and its output)."""

    model: str
    revision: Optional[str]
    prompt: Optional[str]
    max_new_tokens: int
    dtype: str
    trust_remote_code: bool
    generate_kwargs: tuple[tuple[str, Any], ...]   # caption.generate_kwargs, sorted
    engine: str                                    # caption.engine: hf | vllm
    vllm: Optional[Any]                            # caption.vllm (VllmOptions) when engine == vllm, else None

    @classmethod
    def from_config(cls, c: CaptionConfig) -> "CaptionerSpec":
        """The spec of a `caption` config section."""
        return cls(model=c.model, revision=c.revision, prompt=c.prompt, max_new_tokens=c.max_new_tokens,
                   dtype=c.dtype, trust_remote_code=c.trust_remote_code,
                   generate_kwargs=tuple(sorted(c.generate_kwargs.items())), engine=c.engine,
                   vllm=c.vllm if c.engine == "vllm" else None)

    def generation_params(self) -> dict[str, Any]:
        """Greedy decoding unless generate_kwargs say otherwise (the `generate()` arguments)."""
        params: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1}
        params.update(dict(self.generate_kwargs))
        return params

    def generation_params_json(self) -> str:
        """What every caption row records: the generation parameters plus the engine and its version."""
        from veclip.engines import engine_version

        recorded = {**self.generation_params(), "engine": self.engine, "engine_version": engine_version(self.engine)}
        return json.dumps(recorded, sort_keys=True)

    def hub_kwargs(self) -> dict[str, Any]:
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}


@dataclass(frozen=True)
class CaptionerInfo:
    model_type: str
    prompt_text: Optional[str]   # exactly what the model reads before generating; None: no prompt
    revision: Optional[str]      # configured revision, else the hub commit, else None (local path)


def load_processor(spec: CaptionerSpec):
    """The model's processor, with left padding for batched generation."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(spec.model, **spec.hub_kwargs())
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
    return processor


def describe(spec: CaptionerSpec) -> CaptionerInfo:
    """Driver side, no weights loaded: the model type, the rendered prompt and the revision."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec.model, **spec.hub_kwargs())
    processor = load_processor(spec)
    prompt_text = render_prompt(processor, spec.prompt, config.model_type, spec.model)
    revision = spec.revision or getattr(config, "_commit_hash", None)
    return CaptionerInfo(config.model_type, prompt_text, revision)


def _tokenizer_of(spec: CaptionerSpec, processor):
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    if isinstance(processor, PreTrainedTokenizerBase):
        return processor
    tokenizer = getattr(processor, "tokenizer", None)
    return tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(spec.model, **spec.hub_kwargs())


def _image_processor_of(spec: CaptionerSpec, processor):
    from transformers import AutoImageProcessor, PreTrainedTokenizerBase

    if getattr(processor, "image_processor", None) is not None or not isinstance(processor, PreTrainedTokenizerBase):
        return processor  # a multimodal processor, or the image processor itself
    return AutoImageProcessor.from_pretrained(spec.model, **spec.hub_kwargs())


class Captioner:
    """A loaded model + processor that turns a list of PIL images into raw caption texts."""

    def __init__(self, spec: CaptionerSpec, device: str, prompt_text: Optional[str]):
        from transformers import AutoModelForImageTextToText

        self.spec, self.device, self.prompt_text = spec, device, prompt_text
        self.dtype = torch_dtype(spec.dtype, device)
        processor = load_processor(spec)
        self.tokenizer = _tokenizer_of(spec, processor)
        self.inputs_from = processor if prompt_text is not None else _image_processor_of(spec, processor)
        # A template that already writes BOS must not get a second one from the tokenizer.
        bos = self.tokenizer.bos_token
        self.add_special_tokens = not (prompt_text and bos and prompt_text.startswith(bos))
        self.model = AutoModelForImageTextToText.from_pretrained(
            spec.model, dtype=self.dtype, device_map=device, **spec.hub_kwargs()).eval()
        self.gen_kwargs = spec.generation_params()
        if getattr(self.model.generation_config, "pad_token_id", None) is None:
            self.gen_kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        log.info("captioner %s (%s) on %s, %s, prompt %s", spec.model, type(self.model).__name__, device,
                 self.dtype, "none" if prompt_text is None else repr(prompt_text[:80]))

    def build_inputs(self, images: list):
        """Batched model inputs: pixel values (+ left-padded prompt tokens for chat VLMs) on the device."""
        if self.prompt_text is None:
            inputs = self.inputs_from(images=images, return_tensors="pt")
        else:
            inputs = self.inputs_from(images=images, text=[self.prompt_text] * len(images), padding=True,
                                      add_special_tokens=self.add_special_tokens, return_tensors="pt")
        return inputs.to(self.device, dtype=self.dtype)

    def generate(self, inputs):
        import torch

        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.gen_kwargs)
        return strip_prompt(out, inputs.get("input_ids"))

    def caption(self, images: list) -> list[str]:
        """Raw decoded texts, one per image (special tokens skipped, not yet cleaned)."""
        if not images:
            return []
        new_tokens = self.generate(self.build_inputs(images))
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def strip_prompt(out, input_ids):
    """Decoder-only models return prompt + new tokens: keep the new ones."""
    import torch

    if input_ids is None or out.shape[1] < input_ids.shape[1]:
        return out
    n = input_ids.shape[1]
    if torch.equal(out[:, :n].to(input_ids.device), input_ids):
        return out[:, n:]
    return out
