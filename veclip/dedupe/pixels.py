"""Decode image bytes once and derive both image hashes: the decoded-pixel sha256 and the pHash.

    out = hash_images([jpeg_bytes, png_bytes, b"junk"])     # pandas DataFrame, one row per input
    out.columns -> pixel_sha256, phash, hash_error

- `pixel_sha256` hashes the decoded pixels with their size, in a canonical mode: RGB (an opaque
  RGBA/LA/P image is the same pixels as its RGB form; greyscale is expanded to RGB), so a lossless
  re-encode (JPEG -> PNG of the decoded pixels, PNG -> WebP lossless, re-save with other metadata)
  hashes the same. Images with real transparency hash as RGBA. EXIF orientation is not applied
  (bronze records the stored size).
- `phash` is `veclip.dedupe.phash` over a 32x32 grey BOX (area-average) downsample. Flat images
  (no structure) get a null pHash: their hash would be rounding noise, so they only match exactly.
- a row that does not decode gets nulls and `hash_error` (`undecodable_image: <reason>`); the rest
  of the batch is unaffected.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from veclip.dedupe.phash import SIZE, is_flat, phash_batch
from veclip.imaging import flatten_on_white, has_alpha

ERROR_PREFIX = "undecodable_image"


def canonical_pixels(img: Image.Image) -> Image.Image:
    """The image in the mode its pixel hash is taken in: RGB, or RGBA when some pixel is transparent."""
    if img.mode == "RGB":
        return img
    if has_alpha(img):
        rgba = img.convert("RGBA")
        lo, _ = rgba.getchannel("A").getextrema()
        return rgba if lo < 255 else rgba.convert("RGB")
    return img.convert("RGB")


def pixel_sha256(img: Image.Image) -> str:
    """Hex sha256 of the canonical pixels, prefixed by mode and size (so a 2x8 and a 4x4 differ)."""
    px = canonical_pixels(img)
    h = hashlib.sha256(f"{px.mode}:{px.width}x{px.height}:".encode())
    h.update(px.tobytes())
    return h.hexdigest()


def gray32(img: Image.Image) -> np.ndarray:
    """32x32 grey (0..255 float32) by area averaging; transparency composited over white first."""
    if has_alpha(img):
        img = flatten_on_white(img)
    g = img.convert("L").resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(g, dtype=np.float32)


def decode(data: Optional[bytes]) -> tuple[Optional[str], Optional[np.ndarray], Optional[str]]:
    """bytes -> (pixel_sha256, 32x32 grey, None) or (None, None, error)."""
    if data is None or len(data) == 0:
        return None, None, f"{ERROR_PREFIX}: empty image bytes"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return pixel_sha256(img), gray32(img), None
    except Exception as err:  # noqa: BLE001 - a bad image must mark its own row, not fail the batch
        return None, None, f"{ERROR_PREFIX}: {type(err).__name__}: {err}"[:500]


def hash_images(images: Sequence[Optional[bytes]], device: str = "cpu") -> pd.DataFrame:
    """One row per input: pixel_sha256, phash (nullable Int64), hash_error. The DCT runs batched."""
    shas, grays, errors, ok = [], [], [], []
    for i, data in enumerate(images):
        sha, g, err = decode(data)
        shas.append(sha)
        errors.append(err)
        if g is not None:
            grays.append(g)
            ok.append(i)
    phash = pd.array([None] * len(images), dtype="Int64")
    if ok:
        stack = np.stack(grays)
        hashes = phash_batch(stack, device)
        flat = is_flat(stack)
        for j, i in enumerate(ok):
            if not flat[j]:
                phash[i] = int(hashes[j])
    return pd.DataFrame({"pixel_sha256": shas, "phash": phash, "hash_error": errors})
