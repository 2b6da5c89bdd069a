"""Mixed training (VeCLIP section 3.3): per sample, train on the VeCap or on the AltText.

    text, source = choose_text(alt_text, vecap, p=0.5, seed=0, epoch=3, key="ab12")

The choice is a pure function of (seed, epoch, key): a run reproduces exactly, a resumed run makes
the same choices as the run it continues, and every rank agrees without talking to the others.
`p=0` is the AltText-only CLIP baseline, `p=1` VeCap only. A missing VeCap falls back to the
AltText, and a missing AltText to the VeCap (except at p=0, the baseline, which never sees one);
with no text left, the source is "none" and the reader skips and counts the sample.
"""

from __future__ import annotations

import hashlib
from typing import Optional

VECAP, ALT_TEXT, NONE = "vecap", "alt_text", "none"


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) determined by `parts` (stable across processes and Python versions)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def seed_of(*parts: object) -> int:
    """A 32-bit seed determined by `parts`, for a per-sample random generator (crops)."""
    return int(unit_hash(*parts) * 2 ** 32)


def _present(text: Optional[str]) -> bool:
    return text is not None and text == text and bool(str(text).strip())  # `text == text`: not NaN


def choose_text(alt_text: Optional[str], vecap: Optional[str], p: float, seed: int, epoch: int,
                key: str) -> tuple[str, str]:
    """(text, source) for one sample; source is "vecap", "alt_text" or "none" (text is then "")."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"train.p_vecap must be within [0, 1], got {p}")
    has_alt, has_vecap = _present(alt_text), _present(vecap)
    # p = 0 is the AltText-only baseline: it never sees a VeCap, not even as a fallback.
    if p > 0 and has_vecap and (not has_alt or unit_hash("text", seed, epoch, key) < p):
        return str(vecap), VECAP
    if has_alt:
        return str(alt_text), ALT_TEXT
    return "", NONE
