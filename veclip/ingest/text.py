"""AltText cleaning: the text as a person would read it, bounded in length.

    clean_alt_text("Caf&eacute; <b>Paris</b>\u200b  at  night", max_chars=1000) == "Café Paris at night"

Steps, in order: HTML entities decoded (also double-escaped ones such as `&amp;amp;`), HTML comments,
`<script>`/`<style>` blocks and tags of real HTML elements removed (a placeholder such as CC12M's
`<PERSON>` is not an HTML element and is kept), Unicode NFKC normalisation, control, format and
zero-width characters (and U+FFFD) dropped, every run of whitespace made one space, the result cut at a word
boundary to `max_chars`. Text that is empty after cleaning becomes None. Pure functions, no Spark.

`repair_text` is the one place where untrusted text from any reader is made valid Unicode (a JSON
escape such as `\\ud800` decodes to a lone surrogate, which UTF-8, Arrow and Delta refuse): readers'
samples and sample keys pass through it, so one bad string never fails a task.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Optional

from veclip.text import cut_at_word

# Real HTML element names (HTML5 plus common legacy ones). Only these are treated as tags.
_HTML_ELEMENTS = frozenset("""
a abbr acronym address area article aside audio b base bdi bdo big blink blockquote body br button
canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl dt em
embed fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup
hr html i iframe img input ins kbd label legend li link main map mark marquee menu meta meter nav
nobr noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp
script section select small source span strike strong style sub summary sup svg table tbody td
template textarea tfoot th thead time title tr track tt u ul var video wbr
""".split())

_COMMENT = re.compile(r"<!--.*?(-->|$)", re.S)
_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?(</\1\s*>|$)", re.S | re.I)
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)\b(?:[^<>\"']|\"[^\"]*\"|'[^']*')*/?>")
_SPACE = re.compile(r"\s+")
# Format characters (category Cf: zero-width space/joiners, BOM, bidi controls, soft hyphen) and
# other invisible fillers that NFKC keeps.
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def repair_text(text: Optional[str]) -> Optional[str]:
    """`text` as valid Unicode: a split surrogate pair joined, each lone surrogate replaced by U+FFFD."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _strip_tags(text: str) -> str:
    text = _COMMENT.sub(" ", text)
    text = _BLOCK.sub(" ", text)

    def tag(m: re.Match) -> str:
        return " " if m.group(1).lower() in _HTML_ELEMENTS else m.group(0)

    return _TAG.sub(tag, text)


def _unescape(text: str, rounds: int = 3) -> str:
    for _ in range(rounds):  # `&amp;quot;` needs two rounds; bounded so hostile input cannot loop
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return text


def _visible(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat in ("Zl", "Zp") or (cat == "Cc" and ch.isspace()):
        return " "          # tabs, newlines, line/paragraph separators: word breaks
    if cat == "Cc":
        return ""           # NUL, BEL, ESC, ...
    if cat in ("Cf", "Cs", "Cn") or ch in _INVISIBLE or ch == "\ufffd":
        return ""           # ... and U+FFFD, the mark of text repaired or decoded with errors: noise to a reader
    return ch


def clean_alt_text(raw: Optional[str], max_chars: int = 1000) -> Optional[str]:
    """The cleaned AltText, or None when nothing readable is left."""
    if raw is None:
        return None
    text = _strip_tags(_unescape(raw))
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_visible(ch) for ch in text)
    text = _SPACE.sub(" ", text).strip()
    text = cut_at_word(text, max_chars)
    return text or None
