"""AltText features for dedupe: normalisation, boilerplate detection, word shingles, MinHash bands.

    normalise("Click to ENLARGE!")        -> "click to enlarge"
    is_boilerplate("click to enlarge")    -> True     (built-in list, file names, bare numbers)
    sig = minhash(["red square moscow", ...], shingle_words=2, num_perm=64)   # (n, 64) uint64
    keys = band_keys(sig, bands=16)       # (n, 16) int64: texts sharing a key are LSH candidates
    jaccard("a b c", "a b d", 2)          -> 0.333...

A normalised text is NFKC, case-folded, with punctuation and symbols turned into spaces and runs of
white space collapsed, so "Red Square, Moscow." and "red square moscow" are the same text.
Boilerplate here is what a text says by its form alone; texts shared by many unrelated images (a
shop's name) are found by counting in `veclip.dedupe.text_groups`.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from typing import Iterable, Optional, Sequence

import numpy as np

from veclip.text import IMAGE_EXTENSIONS, IMAGE_WORDS

MERSENNE = (1 << 31) - 1   # prime modulus of the MinHash permutations: a * x + b stays below 2^63
_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_FILE_NAME = re.compile(rf"^\S+\.({IMAGE_EXTENSIONS})$", re.IGNORECASE)
_CAMERA_OR_NUMBER = re.compile(r"^(img|image|dsc[nf]?|dcim|pic|pict|photo|picture|screenshot|screen shot|"
                               r"untitled|file|p|gopr|mvimg|wp|pxl)?\s*\d[\d\s]*$")

# Normalised AltTexts that describe no image: the words that name an image (veclip.text) and these phrases.
BOILERPLATE = IMAGE_WORDS | frozenset({
    "", "untitled image", "untitled photo", "no title", "click to enlarge", "click to zoom", "click here",
    "click image to enlarge", "click for larger image", "zoom", "view larger",
    "preview", "no image", "no image available", "image not available", "image unavailable",
    "default", "default image", "logo", "banner", "icon", "avatar", "null", "none",
    "undefined", "n a", "alt", "alt text", "image description", "product image", "main image",
    "featured image", "photo by", "stock photo", "royalty free stock photo", "loading", "spacer",
    "blank", "gallery", "slide", "slider", "home", "header", "footer", "advertisement", "ad", "sponsored",
})


def normalise(text: Optional[str]) -> Optional[str]:
    """NFKC, case-folded, punctuation/symbols -> spaces, whitespace collapsed; None stays None."""
    if text is None:
        return None
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", t).split())


def is_boilerplate(norm: Optional[str], raw: Optional[str] = None, extra: Iterable[str] = ()) -> bool:
    """True for AltTexts that describe no image: empty, generic ("image", "click to enlarge"), a file
    name ("IMG_1234.jpg"), a camera counter or bare number, a lone character, or one of `extra`
    (normalised phrases from config, e.g. a shop's name)."""
    if norm is None or len(norm) <= 1:
        return True
    if norm in BOILERPLATE or norm in extra:
        return True
    if raw is not None and _FILE_NAME.match(raw.strip()):
        return True
    return bool(_CAMERA_OR_NUMBER.match(norm)) or not any(c.isalpha() for c in norm)


def text_score(norm: Optional[str]) -> int:
    """How informative a text is, for the keep policy: its number of distinct words."""
    return len(set(norm.split())) if norm else 0


def shingles(norm: str, words: int) -> list[str]:
    """Word `words`-grams of a normalised text; a shorter text is one shingle."""
    toks = norm.split()
    if len(toks) <= words:
        return [" ".join(toks)]
    return [" ".join(toks[i:i + words]) for i in range(len(toks) - words + 1)]


def shingle_ids(norm: str, words: int) -> np.ndarray:
    """Stable 32-bit ids of a text's distinct shingles (crc32: the same on every worker and run)."""
    return np.unique(np.array([zlib.crc32(s.encode("utf-8")) for s in shingles(norm, words)], dtype=np.uint64))


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the num_perm hash functions h(x) = (a x + b) mod MERSENNE; fixed by `seed`."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, MERSENNE, size=num_perm, dtype=np.uint64)
    return a, b


def minhash(norms: Sequence[str], shingle_words: int, num_perm: int, seed: int = 1) -> np.ndarray:
    """(n, num_perm) MinHash signatures of normalised texts, vectorised over all shingles at once."""
    if len(norms) == 0:
        return np.zeros((0, num_perm), dtype=np.uint64)
    ids = [shingle_ids(t, shingle_words) for t in norms]
    starts = np.cumsum([0] + [len(x) for x in ids[:-1]])
    flat = np.concatenate(ids) % np.uint64(MERSENNE)
    a, b = permutations(num_perm, seed)
    hashed = (a[:, None] * flat[None, :] + b[:, None]) % np.uint64(MERSENNE)  # (num_perm, total)
    return np.minimum.reduceat(hashed, starts, axis=1).T.copy()


def band_keys(sig: np.ndarray, bands: int) -> np.ndarray:
    """(n, bands) int64: each band's rows mixed into one key (equal bands -> equal keys)."""
    n, k = sig.shape
    if k % bands:
        raise ValueError(f"dedupe: {k} MinHash values do not split into {bands} equal bands")
    rows = sig.reshape(n, bands, k // bands).astype(np.uint64)
    key = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows.shape[2]):
            key = key * _BAND_MIX + rows[:, :, j] + np.uint64(j + 1)
    return key.view(np.int64)


def jaccard(a: Optional[str], b: Optional[str], shingle_words: int) -> float:
    """Exact Jaccard similarity of two normalised texts' shingle sets (0.0 when either is empty)."""
    if not a or not b:
        return 0.0
    sa, sb = set(shingles(a, shingle_words)), set(shingles(b, shingle_words))
    return len(sa & sb) / len(sa | sb)
