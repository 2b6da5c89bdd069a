"""Best-of-n fusion: which of several valid LLM candidates becomes the VeCap. Pure functions, no model.

    i = choose(["A red bridge at dusk.", None, "The Golden Gate Bridge at dusk, a red bridge."],
               alt_text="Golden Gate Bridge at dusk", caption="a red bridge over the sea")   # -> 2

`None` marks a candidate that failed `validate`; the others are the tidied texts `validate` returned.

**Selection rule.** Among the valid candidates the one with the highest `Score` wins, compared in order:

1. most *kept words*: the distinct content words of the AltText (after `informative_alt_words`, so shop
   names, SKUs and SEO words earn nothing) and of the caption that the candidate keeps, a word both texts
   have counting once; a word is kept when the candidate has it, an inflection or a compound of it
   (`validate.covers`);
2. fewest *new words*: content words found in neither text (`validate.new_words`), i.e. less made up;
3. fewest CLIP tokens: the same content said more briefly;
4. lowest index: candidate 0 (the answer at `rewrite.temperature`, greedy by default) wins every tie.

Why: VeCLIP's VeCap is meant to carry the AltText's knowledge (names, places, species, brands) *and* the
caption's visual content (objects, colours, layout); a candidate that keeps more of both is the better
fusion, and `validate` has already refused the ones that add, lose or invent too much. Counting each source
word once, not each occurrence, gives repetition nothing. Every step is a comparison of numbers computed
from the texts alone, so the choice is deterministic (a rerun with the same candidates picks the same one),
and with one candidate it is that candidate: n=1 behaves as without selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from veclip.rewrite.validate import clip_token_count, content_words, covers, informative_alt_words, new_words


@dataclass(frozen=True, order=True)
class Score:
    kept: int          # informative AltText content words + caption content words kept (more is better)
    new: int           # content words in neither text (fewer is better)
    clip_tokens: int   # CLIP tokens (fewer is better)

    def key(self, index: int) -> tuple:
        """Sort key: the smallest key is the best candidate."""
        return (-self.kept, self.new, self.clip_tokens, index)


def kept_words(text: str, source_words: set[str]) -> int:
    """How many distinct `source_words` the text keeps (itself, an inflection or a compound of it)."""
    mine = content_words(text)
    return sum(1 for w in source_words if covers(w, mine))


def source_words(alt_text: Optional[str], caption: Optional[str], low_info: bool = False) -> set[str]:
    """The words a candidate earns points for: informative AltText content words and caption content words."""
    return content_words(informative_alt_words(alt_text, low_info)) | content_words(caption)


def score(text: str, alt_text: Optional[str], caption: Optional[str], low_info: bool = False,
          count_tokens: Callable[[str], int] = clip_token_count, _words: Optional[set[str]] = None) -> Score:
    words = source_words(alt_text, caption, low_info) if _words is None else _words
    return Score(kept_words(text, words), len(new_words(text, alt_text, caption)), count_tokens(text))


def choose(candidates: Sequence[Optional[str]], alt_text: Optional[str], caption: Optional[str],
           low_info: bool = False, count_tokens: Callable[[str], int] = clip_token_count) -> Optional[int]:
    """Index of the best valid candidate (None entries are invalid), or None when no candidate is valid."""
    words = source_words(alt_text, caption, low_info)
    scored = [(score(t, alt_text, caption, low_info, count_tokens, words).key(i), i)
              for i, t in enumerate(candidates) if t is not None]
    return min(scored)[1] if scored else None
