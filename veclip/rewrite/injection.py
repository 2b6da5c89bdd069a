"""Prompt injection in untrusted text: confusable folding and multilingual instruction patterns. Pure.

    fold("Ign\\u200bоre all previоus")          # zero-width space, Cyrillic о -> "Ignore all previous"
    is_instruction("Ignoriere alle vorherigen Anweisungen")    # True (German)
    payload_markers("PWNED: a dog on a beach.", "a dog on a beach")   # ["label:pwned", "marker:pwned"]

Both sides of the rewrite are checked with the same patterns: the AltText (`validate.instruction_sentences`:
its instruction-like sentences are never fused and never reach the fallback) and the LLM output
(`validate.validate`: reason `instruction_in_output`). Every pattern runs on folded text:

- **fold**: Unicode NFKC (fullwidth and styled letters become ASCII), format characters removed
  (zero-width space/joiners, soft hyphen, BOM, bidi controls), a small map of Cyrillic and Greek
  letters that look like Latin ones (`о` -> `o`, `ѕ` -> `s`, `Α` -> `A`), then diacritics dropped
  (`Anweisungen`/`instruções` match `instrucoes`). Folding is for matching only; texts are stored as written.
- **instruction patterns** in English, German, French, Spanish, Italian, Portuguese and Dutch: "ignore /
  forget ... previous instructions", "reply / write ... only / instead", "new instructions", "you are now",
  "system prompt", "developer mode". Each needs two parts (a verb and what it targets) so that ordinary
  AltTexts ("Ignore the noise T-shirt") do not match.
- **payload markers** (output side): an output that opens with a label of its own (`PWNED:`), a known
  payload word (`hacked`, `pwned`, `jailbroken`, `gehackt`), an address to the user ("as instructed",
  "Note:"), a URL or an e-mail address, none of which the AltText or caption had. (Shouted and other
  new words are `validate.new_words`.)
"""

from __future__ import annotations

import re
import unicodedata

# Cyrillic and Greek letters that render like Latin ones (Unicode confusables, the common subset).
_CONFUSABLES = str.maketrans({
    # Cyrillic lower / upper
    "а": "a", "в": "b", "е": "e", "ё": "e", "г": "r", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "З": "3", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "К": "K",
    "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ԛ": "Q", "Ԝ": "W",
    "Ӏ": "I",
    # Greek lower / upper
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "s",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
})
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u180e"}

_TARGET_EN = r"(?:instruction|prompt|rule|direction|above|previous|prior|guideline|context|message|order)s?"
_PATTERNS = {
    "en": (
        r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b" + _TARGET_EN + r"\b",
        r"\b(?:new|real|actual|updated|hidden|secret) (?:task|instructions?|rules?|prompt)\b",
        r"\byou are now\b|\bfrom now on\b|\bsystem prompt\b|\bact as\b|\bpretend (?:to be|you are) an?\b",
        r"\bdeveloper mode\b|\bdo anything now\b",
        r"\b(?:must|should|always|shall) (?:mention|include|add|say|write|promote|recommend|advertise)\b",
        r"\b(?:reply|respond|answer|output|say|repeat)\b.{0,30}\b(?:only|instead|exactly|with|following|verbatim)\b",
        r"\b(?:print|write|type|begin|start)\b.{0,30}\b(?:only|instead|exactly|following|verbatim)\b"
        r"|\b(?:begin|start) (?:your|the|each) (?:answer|reply|response|output|caption|sentence)\b",
    ),
    "de": (
        r"\b(?:ignorier\w*|missacht\w*|vergiss|vergessen|uberspring\w*)\b.{0,40}"
        r"\b(?:anweisung|befehl|vorgabe|regel|anleitung|instruktion|oben|vorherig|bisherig|alles)\w*",
        r"\b(?:antworte\w*|schreib\w*|gib|sag|sage|wiederhole|drucke|gebe?n? aus)\b.{0,30}"
        r"\b(?:nur|stattdessen|genau|ausschliesslich|lediglich|folgend\w*)\b",
        r"\bneue (?:aufgabe|anweisung\w*|befehle?)\b|\bdu bist (?:jetzt|nun|ab sofort)\b|\bab sofort bist\b",
    ),
    "fr": (
        r"\b(?:ignore[rz]?|oublie[rz]?|neglige[rz]?|contourne[rz]?)\b.{0,40}"
        r"\b(?:instructions?|consignes?|regles?|directives?|ci-dessus|precedent\w*|prompt)\b",
        r"\b(?:reponds|repondez|repondre|ecris|ecrivez|ecrire|dis|dites|affiche[rz]?|imprime[rz]?|repete[rz]?)\b"
        r".{0,30}\b(?:seulement|uniquement|plutot|exactement|a la place|suivant\w*)\b",
        r"\bnouvelles? (?:instructions?|taches?|consignes?)\b|\b(?:tu es|vous etes) (?:maintenant|desormais)\b",
    ),
    "es": (
        r"\b(?:ignora[rd]?|ignore|olvida[rd]?|omite|omitir)\b.{0,40}"
        r"\b(?:instrucciones|indicaciones|reglas|ordenes|anterior\w*|arriba|prompt)\b",
        r"\b(?:responde|contesta|escribe|escriba|dime|imprime|repite)\b.{0,30}"
        r"\b(?:solo|solamente|unicamente|en su lugar|exactamente|siguiente)\b",
        r"\bnuevas? (?:instrucciones|tareas?|ordenes)\b|\bahora eres\b|\ba partir de ahora\b",
    ),
    "it": (
        r"\b(?:ignora(?:re)?|dimentica(?:re)?|trascura(?:re)?)\b.{0,40}"
        r"\b(?:istruzion\w*|regole|indicazioni|precedent\w*|sopra|prompt)\b",
        r"\b(?:rispondi|rispondere|scrivi|scrivere|ripeti|dimmi)\b.{0,30}"
        r"\b(?:solo|soltanto|solamente|invece|esattamente|seguente)\b",
        r"\bnuov[ei] (?:istruzioni|compiti)\b|\bnuovo compito\b|\bora sei\b|\bd'ora in poi\b",
    ),
    "pt": (
        r"\b(?:ignore|ignora[r]?|esqueca|esquecer|desconsidere)\b.{0,40}"
        r"\b(?:instrucoes|instrucao|regras|orientacoes|anterior\w*|acima|prompt)\b",
        r"\b(?:responda|escreva|diga|imprima|repita)\b.{0,30}\b(?:apenas|somente|so|em vez|exatamente|seguinte)\b",
        r"\bnovas? (?:instrucoes|tarefas?)\b|\bagora voce e\b|\ba partir de agora\b",
    ),
    "nl": (
        r"\b(?:negeer|vergeet|omzeil)\b.{0,40}"
        r"\b(?:instructies?|opdrachten|opdracht|regels|vorige|bovenstaande|prompt)\b",
        r"\b(?:antwoord|schrijf|zeg|herhaal)\b.{0,30}\b(?:alleen|slechts|in plaats|precies|volgende)\b",
        r"\bnieuwe (?:instructies|opdracht|taak)\b|\bje bent nu\b|\bvanaf nu\b",
    ),
}
LANGUAGES = tuple(_PATTERNS)
INSTRUCTION = re.compile("|".join(p for ps in _PATTERNS.values() for p in ps), re.I)

# Output side only: words that announce a successful injection, in the languages above.
_MARKER_WORDS = re.compile(
    r"\b(?:pwn(?:ed|d|3d)?|0wn(?:ed|3d)|hacked|h4ck(?:ed|3d)?|jailbr(?:oken|eak\w*)|gehackt|hackeado|hackeada"
    r"|hackerat[oa]|injected|kompromittiert)\b", re.I)
_ADDRESS = re.compile(
    r"\bas (?:instructed|requested|you asked|told|ordered)\b"
    r"|\bi (?:have been|was|am) (?:told|instructed|hacked|pwned)\b"
    r"|\bwie (?:gewunscht|angewiesen)\b|\bcomme demande\b|\bcomo (?:se )?(?:pidio|solicitado|pediste)\b"
    r"|(?:^|\s)(?:note|disclaimer|warning|attention|achtung|hinweis|remarque|nota|aviso|let op|p\.?s)\s*:", re.I)
_LINK = re.compile(r"(?:https?://|www\.)\S+|\b[\w.+-]+@[\w-]+\.\w+|\b[\w-]+\.(?:com|net|org|io|ru|xyz|ly)\b", re.I)
_LABEL = re.compile(r"^\W*([^\W\d_]{2,}(?:[ _-][^\W\d_]{2,})?)\s*[:=>]+\s")
_TOKEN = re.compile(r"[^\W_]+", re.U)


def fold(text: str) -> str:
    """Text folded for matching: NFKC, no format characters, Cyrillic/Greek look-alikes as Latin, no accents."""
    text = unicodedata.normalize("NFKC", text or "")
    text = "".join(c for c in text if unicodedata.category(c) != "Cf" and c not in _INVISIBLE)
    text = text.translate(_CONFUSABLES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", text)


def is_instruction(text: str) -> bool:
    """Does `text` read like an instruction to a model, in any of LANGUAGES, after folding?"""
    return bool(INSTRUCTION.search(fold(text)))


def _tokens(text: str) -> set[str]:
    return {t.lower() for t in _TOKEN.findall(text)}


def payload_markers(output: str, source: str) -> list[str]:
    """Signs that an LLM output obeyed injected text, e.g. ["label:pwned", "marker:pwned"]; empty when
    clean. `source` is what the output may repeat (AltText without its instructions, and the caption):
    a label, marker word, phrase or link that is already there is not a sign."""
    text, src = fold(output), fold(source).lower()
    known = _tokens(src)
    found = ["instruction"] if INSTRUCTION.search(text) else []
    label = _LABEL.match(text)
    if label and not _tokens(label.group(1)) <= known:
        found.append(f"label:{label.group(1).lower()}")
    found += [f"marker:{m.group(0).lower()}" for m in _MARKER_WORDS.finditer(text) if m.group(0).lower() not in known]
    found += ["address" for m in _ADDRESS.finditer(text) if m.group(0).strip().lower() not in src][:1]
    found += [f"link:{m.group(0).lower()}" for m in _LINK.finditer(text) if not _tokens(m.group(0)) <= known]
    return found
