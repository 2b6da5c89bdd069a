"""The caption prompt: the paper's default, rendering with a model's chat template, hashing.

    render_prompt(processor, "Describe the image concisely, less than 20 words.")
    # LLaVA-1.5 -> "USER: <image>\nDescribe the image concisely, less than 20 words. ASSISTANT:"
    prompt_sha256(text)

Chat VLMs (LLaVA, LLaVA-NeXT, Qwen2-VL, ...) get the instruction as one user turn holding the image
and the text, rendered by the model's own chat template with the generation prompt appended.
Plain captioners (BLIP, BLIP-2, VisionEncoderDecoder, GIT, ...) take no prompt: `render_prompt`
returns None for them and the stage records no prompt.
"""

from __future__ import annotations

import hashlib
from typing import Optional

from veclip.config.caption import PAPER_PROMPT  # the paper's instruction to LLaVA (arXiv 2310.07699, 3.1)

__all__ = ["PAPER_PROMPT", "PROMPT_FREE_TYPES", "chat_template_of", "messages", "render_prompt", "prompt_sha256"]

# Architectures that caption an image without any prompt (model_type from the model's config).
PROMPT_FREE_TYPES = frozenset({"vision-encoder-decoder", "blip", "blip-2", "git", "pix2struct", "kosmos-2"})


def chat_template_of(processor) -> Optional[str]:
    """The chat template a processor (or its tokenizer) carries, if any."""
    template = getattr(processor, "chat_template", None)
    if template:
        return template
    tokenizer = getattr(processor, "tokenizer", None)
    return getattr(tokenizer, "chat_template", None) or None


def messages(prompt: str) -> list[dict]:
    """One user turn: the image, then the instruction."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def render_prompt(processor, prompt: Optional[str], model_type: str, model: str = "") -> Optional[str]:
    """The exact text the model is given before generation, or None for a prompt-free captioner.

    Raises ValueError when a chat VLM has no chat template (its prompt could not be rendered).
    """
    template = chat_template_of(processor)
    if model_type in PROMPT_FREE_TYPES and not template:
        return None
    if not prompt:
        if model_type in PROMPT_FREE_TYPES:
            return None
        raise ValueError(f"caption: model {model or model_type} ({model_type}) needs a prompt; caption.prompt is empty")
    if not template:
        raise ValueError(f"caption: model {model or model_type} ({model_type}) has no chat template, so "
                         f"caption.prompt cannot be rendered; use a model that ships one (processor or tokenizer "
                         f"chat_template) or a prompt-free captioner ({', '.join(sorted(PROMPT_FREE_TYPES))})")
    return processor.apply_chat_template(messages(prompt), add_generation_prompt=True, tokenize=False)


def prompt_sha256(text: Optional[str]) -> Optional[str]:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None
