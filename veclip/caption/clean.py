"""Cleaning generated captions: no chat-template artefacts, one line, bounded length.

    clean_caption("ASSISTANT: A dog on a beach.</s> USER: ...", max_chars=300) -> "A dog on a beach."

Pure functions; `clean_caption` returns "" when nothing is left (the stage turns that into an
error row, since an empty caption is of no use downstream).
"""

from __future__ import annotations

import re

from veclip.text import cut_at_word

# A new turn started by the model: everything from here on is not the caption.
_TURN = re.compile(r"(?:^|\s)(?:(?:USER|User|HUMAN|Human)\s*:|###)"
                   r"|<\|im_start\|>|<\|user\|>|<start_of_turn>|<\|im_end\|>|<end_of_turn>|<\|eot_id\|>"
                   r"|</s>|<\|endoftext\|>")
# A role label the template left at the start ("ASSISTANT:", "assistant\n", "GPT:").
_ROLE = re.compile(r"^\s*(?:ASSISTANT|Assistant|assistant|GPT|gpt|model|<\|assistant\|>)\s*[:\n]\s*")
# Special tokens that survive decoding: <image>, <pad>, <|image_pad|>, [INST] ...
_SPECIAL = re.compile(r"<\|?/?[A-Za-z_][\w.-]*\|?>|\[/?INST\]")
_SPACE = re.compile(r"\s+")
_QUOTES = "\"'`“”‘’"


def cut_at_turn(text: str) -> str:
    """Drop whatever follows the first sign of a new conversation turn or an end-of-turn token."""
    m = _TURN.search(text)
    return text[:m.start()] if m else text


def bound(text: str, max_chars: int) -> str:
    """At most `max_chars` characters, cut at a word boundary (`veclip.text.cut_at_word`), no trailing
    punctuation left dangling."""
    return cut_at_word(text, max_chars).rstrip(" ,;:-")


def clean_caption(text: str, max_chars: int = 300) -> str:
    """The caption a model meant: template artefacts removed, whitespace collapsed, length bounded."""
    text = text or ""
    text = _ROLE.sub("", text, count=1)
    text = cut_at_turn(text)
    text = _SPECIAL.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return bound(text, max_chars)
