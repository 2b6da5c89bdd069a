"""Is an LLM output a usable VeCap? If not, the documented fallback. Pure functions, no Spark.

    v = validate(output, alt_text, caption, spec)          # Verdict(text, reason)
    vecap = v.text if v.ok else fallback_text(caption, fallback_alt(alt_text, "informative"))

`tidy` first takes the first line, drops wrapping quotes and a leading label (`VeCap:`, `Caption:`)
and keeps the first sentence. Every comparison runs on folded text (`injection.fold`: NFKC, no zero-width
characters, Cyrillic/Greek look-alikes as Latin, no accents), and instruction-like sentences are found in
seven languages (`injection.INSTRUCTION`), in the AltText and in the output alike. Then, in order, the
first failing check names the reason:

| reason | the output ... |
| --- | --- |
| empty | is empty after tidying |
| truncated | stopped at max_new_tokens with no complete sentence |
| artefact | contains chat-template or role markup (`<|im_end|>`, `[INST]`, `assistant:`, `<alttext>`, special tokens) |
| preamble | opens with chat filler ("Sure, here is...", "Certainly", "Here's") |
| refusal | refuses or apologises ("I'm sorry", "I cannot", "As an AI") |
| echo | repeats the instruction (6 words in a row from the system text) or the prompt's field names |
| copied_example | is one of the few-shot answers |
| followed_instruction | contains words that only the AltText's instruction-like sentences ask for |
| instruction_in_output | reads like an instruction, or shows a payload the inputs lack: a label of its own (`PWNED:`), a known payload word, an address to the user ("as instructed"), a URL or e-mail (`injection.payload_markers`) |
| too_short | has fewer than 3 words |
| repetitive | repeats a run of 3 words three times (a generation loop) |
| unrelated | shares no content word with the AltText or the caption |
| lost_alt_text | keeps no content word of an informative AltText (a fusion must keep its facts) |
| lost_caption | keeps no content word of the caption (a fusion must keep what is visible) |
| too_long | needs more than max_clip_tokens CLIP tokens |
| new_words | brings in more than MAX_NEW_WORDS content words found in neither text (inflections and compounds count as found; FUNCTION_WORDS and ALLOWED_NEW, the colour/position/framing words a fusion adds, are free), or any such word SHOUTED |

**Fallback rule.** A failed output is replaced by `"<caption>, <AltText part>"`: the cleaned caption, then
the AltText part, cut word by word from the end until the whole fits `max_clip_tokens` CLIP tokens. When
the AltText part is empty or low-information (a file name, only digits/codes, or only generic words such
as "image", "photo", "thumbnail") the fallback is the caption alone. The row is marked `fallback_used`.
The AltText part (`fallback_alt`, config `rewrite.fallback_alt_text`) is:

- `informative` (default): only the AltText words that carry content (`informative_alt_words`): nothing
  when dedupe flagged the AltText low-information, no shop names, SKUs/model numbers, SEO and commerce
  phrases ("free shipping", "for sale", "wholesale"), URLs or file names, and nothing at all when fewer
  than two content words are left;
- `always`: the whole cleaned AltText without its instruction-like sentences;
- `never`: nothing (the caption alone).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from veclip.rewrite.injection import fold, is_instruction, payload_markers
from veclip.rewrite.prompt import CHAT_MARKERS, PromptSpec, clean_for_prompt
from veclip.text import GENERIC_WORDS, IMAGE_EXTENSIONS, IMAGE_WORDS

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.U)
_LABEL = re.compile(r"^\s*(?:vecap|caption|new caption|sentence|answer|output|rewritten caption|result)\s*[:\-]\s*",
                    re.I)
_ROLE = re.compile(r"(?:^|\s)(?:system|assistant|user|human|ASSISTANT|USER)\s*:", re.I)
_PREAMBLE = re.compile(r"^\W*(?:sure|certainly|of course|absolutely|okay|ok\b|great|here(?:'s| is| are)\b|"
                       r"i(?:'d| would) be happy|below is|the (?:merged|combined|new|rewritten) (?:caption|sentence) is)",
                       re.I)
_REFUSAL = re.compile(r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|i (?:cannot|can ?not|can't|won't|am unable|'m unable)"
                      r"|as an ai|i am an ai|language model|unable to (?:help|assist|comply))\b", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = re.compile(r"(?:\b(?:mr|mrs|ms|dr|st|mt|jr|sr|vs|no|co|inc|ltd|ft|ca|approx)|\b[A-Z])\.$", re.I)
_FILE = re.compile(rf"\.(?:{IMAGE_EXTENSIONS})$|^(?:img|dsc|dscn|pxl|photo|image)[_\- ]?\d", re.I)

STOPWORDS = frozenset("""
a an the and or but of in on at to for from by with without into onto over under near above below
is are was were be been being this that these those it its as than then there here their his her
our your my we you they he she i me him them us who whom which what when where why how all any
both each few more most other some such no nor not only own same so too very can will just don
should now one two three image photo picture stock free shipping new size buy sale online view
""".split())
# Function words of the other languages an AltText (and so a fusion) may be written in: de fr es it pt nl.
FUNCTION_WORDS = frozenset("""
der die das den dem des ein eine einer eines einem einen und oder mit von vom auf aus bei zum zur fur uber
unter vor hinter neben zwischen im am ist sind war wird nicht sich auch als wie
les une des aux avec sur sous dans par pour est sont une entre pres devant derriere sans
los las una unos unas del con por para sobre entre bajo ante tras sin hay
gli uno una dei degli delle della dello del nel nella nei sul sulla con per tra fra sotto senza che
uma uns umas dos das nos nas pelo pela com sem sob entre sobre ante
het een van met voor naar bij uit aan tussen onder boven achter naast zijn
""".split())
# Words a fusion may add that neither text has: how sentences are built around an image (colours,
# positions, framing, light, common scene words, linking verbs, counts). Anything else the output adds
# is a new word (see `new_words`).
ALLOWED_NEW = frozenset("""
red orange yellow green blue purple violet pink brown black white grey gray gold golden silver beige
cream tan navy teal dark light bright pale colourful colorful coloured colored multicoloured vivid
background foreground front back behind beside side left right top bottom centre center middle corner
edge close closeup view scene shot frame filled filling surface area set setting display displayed
outdoor outdoors outside indoor indoors inside day daytime night evening morning sunny cloudy sunlight
light lit shadow shadows sky ground floor wall table water grass street road building room field
person people man woman men women child children boy girl group crowd someone pair couple several
four five six many few various single small large big little tall long short wide tiny huge old young
new modern vintage classic plain simple shows showing shown show features featuring featured depicts
depicting depicted displays displaying captured pictured seen visible appears sits sitting stands
standing lies lying rests resting placed located made wearing holding walking posing looking hangs
hanging next against along across around through among while during featuring including also another
image photo picture photograph illustration drawing print poster cover close-up style design
its their his her whose along together beautiful nice detailed colour color shape pattern
""".split())
MAX_NEW_WORDS = 1   # new words tolerated in one output (an adjective the LLM chose), see `new_words`


@dataclass(frozen=True)
class Verdict:
    text: Optional[str]     # the tidied output
    reason: Optional[str]   # None when the output is a usable VeCap

    @property
    def ok(self) -> bool:
        return self.reason is None


@functools.lru_cache(maxsize=1)
def _clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def clip_token_count(text: str) -> int:
    """CLIP tokens of `text` with the start and end tokens (open_clip's BPE tokenizer)."""
    return len(_clip_tokenizer().encode(text)) + 2


def words(text: Optional[str]) -> list[str]:
    """Lower-cased words of the folded text (look-alike letters, zero-width characters, accents folded)."""
    return [w.lower() for w in _WORD.findall(fold(text or ""))]


def content_words(text: Optional[str]) -> set[str]:
    return {w for w in words(text) if len(w) > 2 and w not in STOPWORDS and not w.isdigit()}


def sentences(text: str) -> list[str]:
    """Split at . ! ? followed by a capital or digit, not after an abbreviation such as "St." or "J."."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        head = text[start:m.start()].rstrip()
        if not _ABBREV.search(head):
            out.append(head)
            start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def tidy(output: Optional[str]) -> str:
    """First line, without wrapping quotes or a leading label, first sentence only."""
    text = next((line.strip() for line in (output or "").splitlines() if line.strip()), "")
    text = _LABEL.sub("", text).strip()
    if len(text) >= 2 and text[0] in "\"'`“‘" and text[-1] in "\"'`”’":
        text = text[1:-1].strip()
    parts = sentences(text)
    return re.sub(r"\s+", " ", parts[0] if parts else text).strip()


def _segments(alt_text: Optional[str]) -> list[str]:
    return re.split(r"(?<=[.!?;:])\s+|\s+[-|]\s+", alt_text or "")


def instruction_sentences(alt_text: Optional[str]) -> list[str]:
    """The sentences of an AltText that read like instructions to a model ("ignore previous ...", in any
    of `injection.LANGUAGES`, look-alike letters folded); one ending in ":" takes its payload, the next one."""
    parts, bad = _segments(alt_text), []
    for i, s in enumerate(parts):
        if is_instruction(s):
            bad.append(s)
            if s.rstrip().endswith(":") and i + 1 < len(parts):
                bad.append(parts[i + 1])
    return bad


def without_instructions(alt_text: Optional[str]) -> str:
    bad = instruction_sentences(alt_text)
    return " ".join(s for s in _segments(alt_text) if s not in bad).strip()


def injected_words(alt_text: Optional[str], caption: Optional[str]) -> set[str]:
    """Words that only the AltText's instruction-like sentences contain: an output using one followed them."""
    bad = instruction_sentences(alt_text)
    if not bad:
        return set()
    allowed = content_words(without_instructions(alt_text)) | content_words(caption)
    return {w for s in bad for w in content_words(s)} - allowed


def _known(word: str, source: set[str]) -> bool:
    """Is `word` (or an inflection, compound part or concatenation of it) one of the `source` words?"""
    if word in source:
        return True
    for s in source:
        short, long_ = (word, s) if len(word) <= len(s) else (s, word)
        if len(short) >= 3 and long_.startswith(short) and len(long_) - len(short) <= 3:
            return True            # dog/dogs, shoe/shoes, sand/sandy, run/runs
        if len(short) >= 5 and (long_.startswith(short[:5]) or short in long_):
            return True            # hunting/hunter, sweatshirt/sweat, amazonbasics/basics
    return False


def new_words(text: str, alt_text: Optional[str], caption: Optional[str]) -> list[str]:
    """Content words of `text` found in neither the AltText (its instruction sentences left out) nor the
    caption, nor FUNCTION_WORDS/ALLOWED_NEW: what the LLM brought in from elsewhere."""
    source = content_words(without_instructions(alt_text)) | content_words(caption)
    return sorted(w for w in content_words(text)
                  if w not in ALLOWED_NEW and w not in FUNCTION_WORDS and not _known(w, source))


def _too_new(text: str, alt_text: Optional[str], caption: Optional[str]) -> bool:
    """More than MAX_NEW_WORDS new words, or any new word SHOUTED (a payload such as HACKED, PWNED)."""
    new = set(new_words(text, alt_text, caption))
    shouted = {w.lower() for w in _WORD.findall(fold(text)) if len(w) >= 3 and w.isupper()}
    return len(new) > MAX_NEW_WORDS or bool(new & shouted)


def is_low_information(alt_text: Optional[str]) -> bool:
    """Empty, a file name, only digits/codes, or only generic words ("image", "photo", "thumbnail")."""
    text = (alt_text or "").strip()
    if not text or _FILE.search(text):
        return True
    ws = [w for w in words(text) if any(c.isalpha() for c in w)]
    return not ws or all(w in GENERIC_WORDS or len(w) < 2 for w in ws)


def _overlaps(a: set[str], b: set[str]) -> bool:
    # Loose match so that "bridges" meets "bridge" and "hunting" meets "hunt".
    return bool(a & b) or any(x[:5] == y[:5] for x in a for y in b if len(x) >= 5 and len(y) >= 5)


def _loops(text: str) -> bool:
    ws = words(text)
    grams = Counter(" ".join(ws[i:i + 3]) for i in range(max(len(ws) - 2, 0)))
    return bool(grams) and max(grams.values()) >= 3


def _lost(text: str, source_words: set[str]) -> bool:
    return bool(source_words) and not _overlaps(content_words(text), source_words)


def _echoes(text: str, spec: Optional[PromptSpec]) -> bool:
    low = text.lower()
    if re.search(r"\balt ?text\b|<\s*/?\s*(?:alttext|caption)", low):
        return True
    if spec is None:
        return False
    sys_words = words(spec.system)
    grams = {" ".join(sys_words[i:i + 6]) for i in range(max(len(sys_words) - 5, 0))}
    out = words(text)
    return any(" ".join(out[i:i + 6]) in grams for i in range(max(len(out) - 5, 0)))


def _copied_example(text: str, alt_text: Optional[str], spec: Optional[PromptSpec]) -> bool:
    if spec is None:
        return False
    mine = " ".join(words(text))
    return any(" ".join(words(ex.vecap)) == mine and ex.alt_text != alt_text for ex in spec.examples)


def _markup(text: str, special_tokens: Sequence[str]) -> bool:
    return bool(CHAT_MARKERS.search(text) or _ROLE.search(text)
                or any(t and t in text for t in special_tokens))


def validate(output: Optional[str], alt_text: Optional[str], caption: Optional[str],
             spec: Optional[PromptSpec] = None, max_clip_tokens: int = 77, special_tokens: Sequence[str] = (),
             truncated: bool = False, count_tokens: Callable[[str], int] = clip_token_count) -> Verdict:
    """Check one LLM output; `alt_text`/`caption` are the cleaned texts the prompt quoted."""
    raw = (output or "").strip()
    text = tidy(raw)
    alt_words = content_words(without_instructions(alt_text))
    checks = (
        ("empty", lambda: not text),
        ("truncated", lambda: truncated and "\n" not in raw and not re.search(r"[.!?]\W*$", text)),
        ("artefact", lambda: _markup(raw.split("\n", 1)[0], special_tokens) or _markup(text, special_tokens)),
        ("preamble", lambda: bool(_PREAMBLE.search(text))),
        ("refusal", lambda: bool(_REFUSAL.search(text))),
        ("echo", lambda: _echoes(text, spec)),
        ("copied_example", lambda: _copied_example(text, alt_text, spec)),
        ("followed_instruction", lambda: bool(content_words(text) & injected_words(alt_text, caption))),
        ("instruction_in_output",
         lambda: bool(payload_markers(text, f"{without_instructions(alt_text)} {caption or ''}"))),
        ("too_short", lambda: len(words(text)) < 3),
        ("repetitive", lambda: _loops(text)),
        ("unrelated", lambda: not _overlaps(content_words(text), content_words(alt_text) | content_words(caption))),
        ("lost_alt_text", lambda: _lost(text, alt_words) and not is_low_information(alt_text)),
        ("lost_caption", lambda: _lost(text, content_words(caption))),
        ("too_long", lambda: count_tokens(text) > max_clip_tokens),
        ("new_words", lambda: _too_new(text, alt_text, caption)),
    )
    for reason, failed in checks:
        if failed():
            return Verdict(text or None, reason)
    return Verdict(text, None)


def _fit(text: str, max_clip_tokens: int, count_tokens: Callable[[str], int], keep_words: int = 0) -> str:
    """Drop words from the end until `text` fits (never fewer than `keep_words` words)."""
    parts = text.split()
    while len(parts) > max(keep_words, 1) and count_tokens(" ".join(parts)) > max_clip_tokens:
        parts.pop()
    return " ".join(parts).rstrip(" ,;:-|")


def fallback_text(caption: Optional[str], alt_text: Optional[str], max_clip_tokens: int = 77,
                  caption_max_chars: int = 300, alt_text_max_chars: int = 300,
                  count_tokens: Callable[[str], int] = clip_token_count) -> str:
    """The documented fallback: "<caption>, <AltText>" fitted to the CLIP context, or the caption alone."""
    cap = (clean_for_prompt(caption, caption_max_chars) or "").rstrip(" .,;:")
    alt = without_instructions(clean_for_prompt(alt_text, alt_text_max_chars))
    cap = _fit(cap, max_clip_tokens, count_tokens)
    if not alt or is_low_information(alt):
        return cap
    if not cap:
        return _fit(alt, max_clip_tokens, count_tokens)
    joined = _fit(f"{cap}, {alt}", max_clip_tokens, count_tokens, keep_words=len(cap.split()))
    return joined if len(joined) > len(cap) else cap


# ---- The informative fallback: which AltText words the fallback keeps (rewrite.fallback_alt_text) ----

FALLBACK_MODES = ("informative", "always", "never")
MIN_INFORMATIVE_WORDS = 2   # content words the kept AltText needs (or one word of MIN_LONE_WORD_CHARS letters)
MIN_LONE_WORD_CHARS = 5
# Shop, SEO and commerce words: what a product page says to sell, not what the image shows.
COMMERCE_WORDS = frozenset("""
sale sales sell seller sellers selling sold buy buying bought cheap cheaper cheapest price prices pricing
priced online store stores shop shops shopping webshop eshop official wholesale wholesaler wholesalers
discount discounts discounted deal deals offer offers bargain clearance outlet retail retailer coupon promo
promotion shipping freeshipping shipped delivery checkout supplier suppliers manufacturer
manufacturers factory exporter exporters oem odm moq pcs pc piece pieces lot available stock instock
bestseller bestsellers quality genuine authentic brand free new item items product products
etsy ebay amazon aliexpress alibaba walmart taobao dhgate
size sizes xxs xs xl xxl xxxl xxxxl
""".split())
# Multi-word shop/SEO phrases, removed before single words (so "New York" or "hot air balloon" stay).
_COMMERCE_PHRASES = re.compile(
    r"\b(?:free\s+(?:shipping|delivery|postage|gift)|best\s+(?:price|prices|seller|sellers|selling|buy|deal)"
    r"|lowest\s+prices?|low\s+(?:price|prices|cost)|(?:available\s+)?for\s+sale|on\s+sale|hot\s+(?:sale|sales|"
    r"selling|sell|new|item|items|deal|deals|product|style)|top\s+(?:selling|seller|quality|rated)"
    r"|brand\s+new|ready\s+to\s+ship|in\s+stock|(?:high|top|best|good)\s+quality|(?:shop|buy|order)\s+now"
    r"|add\s+to\s+cart|from\s+china\s+suppliers|china\s+(?:suppliers|manufacturers|factory)|customer\s+reviews?"
    r"|(?:plus|one|free)\s+size|size\s+(?:\d+(?:[.,/]\d+)*|x*[sml]|xx*l)\b|click\s+(?:here|to\s+\w+)"
    r"|view\s+larger|stock\s+(?:photo|image|picture|photography|footage|vector)|royalty[\s-]+free"
    r"|(?:(?:a|an|the)\s+)?(?:close-?up\s+)?(?:photo|image|picture|photograph)\s+of(?:\s+(?:a|an|the))?)\b", re.I)
_NEW_OK = re.compile(r"^new\s+(?:york|zealand|jersey|mexico|orleans|delhi|hampshire|england|guinea|caledonia|"
                     r"brunswick|haven|south\s+wales|year|years|moon|testament|wave|age|world|town|forest)\b", re.I)
_DOMAIN = re.compile(r"\S*\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|info|biz|shop|store|co|uk|de|fr|ru|cn|jp|in|au|ca|"
                     r"it|es|nl|io|eu|us)\b\S*|\S+@\S+", re.I)
_FILE_NAME = re.compile(rf"\S+\.(?:{IMAGE_EXTENSIONS})\b", re.I)
_CREDIT = re.compile(r"(?:©|\(c\)|\bcopyright\b)\s*[^,;|()]*", re.I)    # "© Per Ole Hagen": a credit, not the image
_SHOP_SEGMENT = frozenset("store stores shop shops webshop boutique outlet etsy ebay amazon aliexpress alibaba "
                          "walmart taobao dhgate".split())
_SEGMENT_SPLIT = re.compile(r"\s*(?:\|\|?|»|::|•)\s*|\s+[-–—]\s+")
_GROUP = re.compile(r"[(\[{]([^()\[\]{}]*)[)\]}]")
_ORDINAL = re.compile(r"^\d+(?:st|nd|rd|th|s|'s)$|^\d[dD]$|^c\.?\d{4}s?$", re.I)
_YEARS = re.compile(r"^(?:1[5-9]|20)\d\d[-–/](?:(?:1[5-9]|20)\d\d|\d\d)$")   # 1940-1943, 2019/20
_EDGE_WORDS = frozenset("and or of in at for from with by to on op van bei und de".split())   # left dangling
_END_WORDS = _EDGE_WORDS | {"the", "a", "an"}


def _is_code(token: str) -> bool:
    """A SKU, model number, price or count: letters mixed with digits (UBZ-S20, 05P24Aug13, F5774, 48pcs),
    a run of 5+ digits or a price ($89.99, 920,000), a slash code (S20B/S20WH, S/M/L); not a year, an
    ordinal or a decade (2016, 19th, 1960s)."""
    core = token.strip(".,;:!?\"'()[]{}")
    if not core or _YEARS.match(core):
        return False
    if "/" in core and (any(c.isdigit() for c in core) or all(len(p) <= 2 for p in core.split("/") if p)):
        return True
    if core[0] in "$€£¥₹" or core[-1] in "$€£¥₹":
        return True
    digits = sum(c.isdigit() for c in core)
    if digits >= 5:
        return True
    letters = sum(c.isalpha() for c in core)
    return bool(digits and letters) and not _ORDINAL.match(core)


def _drop_token(token: str) -> bool:
    core = token.strip(".,;:!?\"'()[]{}&*#+~").lower()
    if not core:
        return token.strip() != "&"     # a lone dash, bar or asterisk goes; "Red & Black" keeps its "&"
    # The image words, not all of GENERIC_WORDS: "home" or "logo" can carry meaning in a text.
    if _is_code(token) or core in COMMERCE_WORDS or core in IMAGE_WORDS:
        return True
    return len(core) == 1 and core.isalpha() and core not in ("a", "i", "&")


def _tidy_kept(text: str) -> str:
    text = re.sub(r"\s+([,;:.!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:.!?&+])+", r"\1", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", " ", text)
    text = re.sub(r"\s+", " ", text).strip(" ,;:-|&+/")
    parts = text.split()
    while parts and parts[0].strip(",;:").lower() in _EDGE_WORDS:
        parts.pop(0)
    while parts and parts[-1].strip(",;:.").lower() in _END_WORDS:
        parts.pop()
    return " ".join(parts).strip(" ,;:-|&+/")


def informative_alt_words(alt_text: Optional[str], low_info: bool = False, alt_text_max_chars: int = 300) -> str:
    """What the `informative` fallback keeps of an AltText: its content words, or "" when none carry content.

    The rule, in order:
    1. Nothing when dedupe flagged the AltText low-information (`low_info`: boilerplate, or one text shared
       by unrelated images such as a shop's name) or `is_low_information` says so (empty, a file name,
       only digits/codes or generic words).
    2. The AltText is cleaned as for the prompt, its instruction-like sentences removed.
    3. Segments (split at `|`, ` - `, `»`, ...) that name a shop or marketplace ("The Mizzou Store",
       "op Etsy") are dropped, as long as another segment remains.
    4. URLs, domains ("johnlewis.com"), e-mail addresses, file names and credits ("© Per Ole Hagen") go;
       shop/SEO phrases go ("free shipping", "best price", "for sale", "hot sale", "brand new",
       "from china suppliers", "size 10", "stock photo", "royalty-free", "a photo of"); bracketed groups that hold a
       code, or only one capitalised word, go ("(UBZ-S20B/UBZ-S20WH)", "(DEMITOSS)"; "(Tyto alba)" stays).
    5. Word by word: SKU/model-number-like tokens (letters mixed with digits, 5+ digit runs, prices,
       slash codes; years, year ranges, decades and ordinals stay), COMMERCE_WORDS ("sale", "buy", "cheap",
       "online", "store", "shop", "official", "new" (not in "New York"), "wholesale", "discount", sizes
       "xl"/"xxl", ...; "hot" only in phrases such as "hot sale", so "hot air balloon" stays), image words
       ("thumbnail", "photo") and stray single letters are dropped, and so are the prepositions and
       conjunctions this leaves dangling at either end.
    6. If fewer than MIN_INFORMATIVE_WORDS content words remain (a lone word of at least
       MIN_LONE_WORD_CHARS letters, a name such as "Cockapoo", still counts), nothing is kept.

    "Kenwood UBZ-S20 (UBZ-S20B/UBZ-S20WH) and demits (DEMITOSS) income 05P24Aug13 transceiver sale"
    -> "Kenwood and demits income transceiver"; "Buy Winser London Wool Luxe Aran Jumper, Ivory Online at
    johnlewis.com" -> "Winser London Wool Luxe Aran Jumper, Ivory"; "Eiffel Tower, Paris" unchanged.
    """
    if low_info:
        return ""
    text = clean_for_prompt(alt_text, alt_text_max_chars) or ""
    for bad in instruction_sentences(text):
        text = text.replace(bad, " ")
    text = re.sub(r"(?<=\w)\+(?=\w)", " ", text.replace("_", " ")).strip()   # Party+Pack+for+8
    if not text or is_low_information(text):
        return ""
    segments = [s for s in _SEGMENT_SPLIT.split(text) if s and s.strip(" -|")]
    if len(segments) > 1:
        kept = [s for s in segments if not ({w.lower() for w in _WORD.findall(s)} & _SHOP_SEGMENT)]
        if kept:
            segments = kept
    text = ", ".join(s.strip(" ,;") for s in segments)
    text = _CREDIT.sub(" ", _FILE_NAME.sub(" ", _DOMAIN.sub(" ", text)))

    def group(m: re.Match) -> str:
        inner = m.group(1).strip()
        tokens = inner.split()
        if not tokens or any(_is_code(t) for t in tokens) or (len(tokens) == 1 and inner.isupper()):
            return " "
        return m.group(0)

    text = _GROUP.sub(group, text)
    # "New York" stays: protect the allowed "new ..." places before the phrases and words go.
    protected = []

    def protect(m: re.Match) -> str:
        protected.append(m.group(0))
        return f" \x00{len(protected) - 1}\x00 "

    text = re.sub(r"\bnew\s+\w+(?:\s+wales)?", lambda m: protect(m) if _NEW_OK.match(m.group(0)) else m.group(0),
                  text, flags=re.I)
    text = _COMMERCE_PHRASES.sub(" ", text)
    kept = [t for t in text.split() if t.startswith("\x00") or not _drop_token(t)]
    text = " ".join(kept)
    text = re.sub(r"\x00(\d+)\x00", lambda m: protected[int(m.group(1))], text)
    text = _tidy_kept(text)
    cw = content_words(text)
    if len(cw) < MIN_INFORMATIVE_WORDS and not any(len(w) >= MIN_LONE_WORD_CHARS for w in cw):
        return ""
    return "" if is_low_information(text) else text


def fallback_alt(alt_text: Optional[str], mode: str = "informative", low_info: bool = False,
                 alt_text_max_chars: int = 300) -> Optional[str]:
    """The AltText part the fallback gets under `rewrite.fallback_alt_text`: `informative` =
    informative_alt_words, `always` = the AltText as it is (the fallback's own cleaning applies), `never` = None."""
    if mode == "always":
        return alt_text
    if mode == "never":
        return None
    if mode == "informative":
        return informative_alt_words(alt_text, low_info, alt_text_max_chars) or None
    raise ValueError(f"fallback_alt_text must be one of {FALLBACK_MODES}, got {mode!r}")


def covers(word: str, source: set[str]) -> bool:
    """Is `word` one of `source`, or an inflection, compound part or concatenation of one (dog/dogs)?"""
    return _known(word, source)
