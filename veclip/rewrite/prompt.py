"""The fusion prompt: a versioned prompt file, untrusted AltText made safe to quote, the chat template.

    spec = load_prompt("conf/prompts/vecap_fusion_v1.yaml")
    text = fuse_prompt(spec, tokenizer, alt_text="Golden Gate Bridge - stock photo", caption="a red bridge")
    spec.version, spec.sha256            # recorded with every VeCap

The prompt file holds a system instruction, a user template with <alttext>/<caption> delimiters and
few-shot examples (user/assistant pairs, the paper's in-context learning). The AltText is web text
anyone could have written, so before it is quoted it is cleaned (HTML, Unicode, whitespace: the
ingest cleaner), stripped of anything that could end the quote or open a new chat turn (chat-template
tokens, our own delimiter tags, every `<` and `>`, role labels such as `assistant:`), stripped of URLs
and cut to a bound (CC12M's `<PERSON>` placeholder becomes `PERSON`). What remains is data between
tags, and the system text says so. Pure functions, no Spark.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import yaml

from veclip.files import REPO_ROOT
from veclip.ingest.text import clean_alt_text
from veclip.text import cut_at_word

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Markers that open or close chat turns in common templates (ChatML, Llama 2/3, Gemma, Vicuna, Alpaca)
# and the prompt's own delimiters. In a quoted AltText each is removed.
CHAT_MARKERS = re.compile(
    r"<\|[^<>|]{0,40}\|>"                        # <|im_start|>, <|eot_id|>, <|start_header_id|>, ...
    r"|\[/?INST\]|<</?SYS>>|</?s>"               # Llama 2 / Mistral
    r"|<(?:start|end)_of_turn>"                 # Gemma
    r"|</?\s*(?:alttext|caption|system|user|assistant)\b[^<>]{0,40}>"  # our delimiters, role tags
    r"|#{2,}\s*(?:instruction|response|input|system|human|assistant)\b\s*:?",  # Alpaca-style headers
    re.I)
ROLE_LABEL = re.compile(r"\b(system|assistant|user|human|ai)\s*:", re.I)
URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Example:
    alt_text: str
    caption: str
    vecap: str


@dataclass(frozen=True)
class PromptSpec:
    version: str
    system: str
    user_template: str
    examples: tuple[Example, ...]
    fallback_chat_template: Optional[str]
    path: str
    sha256: str   # of the prompt's content (not of comments or layout in the file)


def resolve_prompt_file(path: str) -> str:
    """The prompt file: `path` as given (absolute or from the working directory), else in the checkout,
    else in the installed package, which ships conf/prompts/ as veclip/conf/prompts/ (so the default
    `conf/prompts/vecap_fusion_v1.yaml` resolves outside a checkout too)."""
    tried = [path] if os.path.isabs(path) else [os.path.abspath(path), str(REPO_ROOT / path),
                                                 os.path.join(_PACKAGE, path)]
    for p in tried:
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"rewrite.prompt_file not found: tried {tried} (set rewrite.prompt_file to the "
                            "prompt YAML, e.g. a Volume path on a cluster)")


def content_sha256(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def load_prompt(path: str) -> PromptSpec:
    """Read and check a prompt file; errors name the file and the missing or bad key."""
    real = resolve_prompt_file(path)
    with open(real, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{real}: a prompt file is a mapping with version, system, user_template, examples")
    for key in ("version", "system", "user_template", "examples"):
        if not data.get(key):
            raise ValueError(f"{real}: '{key}' is missing or empty")
    for field in ("{alt_text}", "{caption}"):
        if field not in data["user_template"]:
            raise ValueError(f"{real}: user_template must contain {field}")
    examples = []
    for i, ex in enumerate(data["examples"]):
        if not isinstance(ex, dict) or not all(ex.get(k) for k in ("alt_text", "caption", "vecap")):
            raise ValueError(f"{real}: examples[{i}] needs alt_text, caption and vecap")
        examples.append(Example(str(ex["alt_text"]), str(ex["caption"]), str(ex["vecap"])))
    content = {k: data.get(k) for k in ("version", "system", "user_template", "examples", "fallback_chat_template")}
    return PromptSpec(version=str(data["version"]), system=str(data["system"]).strip(),
                      user_template=str(data["user_template"]), examples=tuple(examples),
                      fallback_chat_template=data.get("fallback_chat_template"), path=real,
                      sha256=content_sha256(content))


def clean_for_prompt(text: Optional[str], max_chars: int) -> Optional[str]:
    """Untrusted text made safe to quote: cleaned, no chat/role markers or URLs, bounded; None if empty."""
    text = clean_alt_text(text, max_chars=max(4 * max_chars, 1000))
    if not text:
        return None
    text = CHAT_MARKERS.sub(" ", text)
    text = ROLE_LABEL.sub(r"\1", text)          # "assistant: do X" -> "assistant do X": no new turn
    text = URL.sub(" ", text)
    text = text.replace("<", " ").replace(">", " ")  # no tag can be opened or closed from inside the quote
    text = _SPACE.sub(" ", text).strip(" -|,;")
    return cut_at_word(text, max_chars) or None


def user_message(spec: PromptSpec, alt_text: Optional[str], caption: str) -> str:
    # str.format does not re-read substituted values, so braces inside the AltText stay data.
    return spec.user_template.format(alt_text=alt_text or "", caption=caption)


def fuse_messages(spec: PromptSpec, alt_text: Optional[str], caption: str) -> list[dict]:
    """System instruction, the few-shot turns, then this sample (texts already cleaned)."""
    messages = [{"role": "system", "content": spec.system}]
    for ex in spec.examples:
        messages.append({"role": "user", "content": user_message(spec, ex.alt_text, ex.caption)})
        messages.append({"role": "assistant", "content": ex.vecap})
    messages.append({"role": "user", "content": user_message(spec, alt_text, caption)})
    return messages


def render(tokenizer, spec: PromptSpec, messages: Sequence[dict]) -> str:
    """The model's chat template (or the prompt file's fallback one) with the generation prompt added."""
    template = None if getattr(tokenizer, "chat_template", None) else spec.fallback_chat_template
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer has no chat template and {spec.path} has no fallback_chat_template")
    kwargs = dict(tokenize=False, add_generation_prompt=True, chat_template=template)
    try:
        return tokenizer.apply_chat_template(list(messages), **kwargs)
    except Exception as err:  # noqa: BLE001 - jinja raises TemplateError for templates without a system role
        if messages[0]["role"] != "system" or "system" not in str(err).lower():
            raise
        # Templates without a system role (Gemma, Mistral v0.1): the instruction opens the first user turn.
        first = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
        return tokenizer.apply_chat_template([first, *messages[2:]], **kwargs)


def fuse_prompt(spec: PromptSpec, tokenizer, alt_text: Optional[str], caption: str,
                alt_text_max_chars: int = 300, caption_max_chars: int = 300) -> str:
    """The full prompt for one sample: clean and bound both texts, quote them, apply the chat template."""
    alt = clean_for_prompt(alt_text, alt_text_max_chars)
    cap = clean_for_prompt(caption, caption_max_chars) or ""
    return render(tokenizer, spec, fuse_messages(spec, alt, cap))
