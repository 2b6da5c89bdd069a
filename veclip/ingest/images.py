"""Image bytes -> accepted (size, format, mode, sha256) or rejected with a machine-readable reason.

    check = inspect_image(data, cfg.ingest)   # limits: min_side, max_pixels, max_bytes, image_formats
    check.reason   # None when accepted, else e.g. "truncated"

Order of checks: missing -> zero bytes -> too many bytes -> header (format among the accepted ones)
-> pixel count from the header, *before* any decoding (a decompression bomb is refused without
allocating its pixels) -> smallest side -> a full decode, which finds truncated and corrupt data.
JPEGs decode in draft mode (scaled down 8x by the codec): every byte is still read, so truncation
is still found, at a fraction of the cost. Valid but unusual images (RGBA, CMYK, 16-bit, palette,
animated GIF, WebP, EXIF-rotated) are accepted; size and mode are recorded as stored (EXIF
orientation is not applied). Pillow's own guard (2x Image.MAX_IMAGE_PIXELS) also applies.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from typing import Optional

from PIL import Image, UnidentifiedImageError

from veclip.config.ingest import IngestConfig

# Reasons an image is refused (the `reason` column of quarantine).
MISSING_IMAGE = "missing_image"
ZERO_BYTES = "zero_bytes"
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_SMALL = "too_small"
TRUNCATED = "truncated"
CORRUPT = "corrupt"

# Leading bytes of formats we know, to tell "damaged image" from "not an image at all".
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
    b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}


@dataclass(frozen=True)
class ImageCheck:
    """What inspection found. `reason` is None for an accepted image."""

    reason: Optional[str] = None
    detail: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    format: Optional[str] = None
    mode: Optional[str] = None
    sha256: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def sniff(data: bytes) -> Optional[str]:
    """The format named by the first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for sig, fmt in _SIGNATURES.items():
        if data.startswith(sig):
            return fmt
    return None


def _allowed_formats(limits: IngestConfig) -> list[str]:
    Image.init()  # registers every plugin, so that the names below resolve
    return [f for f in (x.upper() for x in limits.image_formats) if f in Image.OPEN]


def _open(data: bytes, limits: IngestConfig):
    """(image, None) or (None, ImageCheck with the reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the pixel limit below decides
            return Image.open(io.BytesIO(data), formats=_allowed_formats(limits)), None
    except Image.DecompressionBombError as e:
        return None, ImageCheck(TOO_MANY_PIXELS, f"refused from the header, not decoded: {e}")
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, struct.error, EOFError) as e:
        known = sniff(data)
        if known and known in _allowed_formats(limits):
            if ends_early(known, data):
                return None, ImageCheck(TRUNCATED, f"{known} data ends inside the header ({len(data)} bytes)")
            return None, ImageCheck(CORRUPT, f"{known} signature but unreadable header: {type(e).__name__}")
        if known:
            return None, ImageCheck(NOT_AN_IMAGE, f"{known} is not an accepted format {list(limits.image_formats)}")
        return None, ImageCheck(NOT_AN_IMAGE, f"not a {'/'.join(limits.image_formats)} image (starts {data[:8]!r})")


def ends_early(fmt: str, data: bytes) -> bool:
    """True when the bytes stop before the format's end marker (or the length its header states)."""
    if fmt == "WEBP":  # RIFF states the file length; libwebp's errors do not say "truncated"
        return len(data) >= 8 and len(data) < struct.unpack("<I", data[4:8])[0] + 8
    if fmt == "PNG":
        return b"IEND" not in data[-16:]
    if fmt == "JPEG":
        return data.rfind(b"\xff\xd9") < 0
    if fmt == "GIF":
        return not data.rstrip(b"\0").endswith(b";")
    return False


def _decode(img, data: bytes) -> Optional[ImageCheck]:
    """Decode the first frame fully; None when fine, else the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if img.format == "JPEG":
                w, h = img.size
                img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))
            img.load()
        return None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError) as e:
        msg = str(e)
        if "truncated" in msg.lower() or isinstance(e, EOFError) or ends_early(img.format, data):
            return ImageCheck(TRUNCATED, f"{img.format} data ends early: {msg}")
        return ImageCheck(CORRUPT, f"{img.format} does not decode: {type(e).__name__}: {msg}")


def inspect_image(data: Optional[bytes], limits: Optional[IngestConfig] = None) -> ImageCheck:
    """Check encoded image bytes against the limits of `limits` (an `ingest` config section; None: the
    defaults); never raises on bad data."""
    try:
        return _inspect(data, IngestConfig() if limits is None else limits)
    except Exception as e:  # noqa: BLE001 - a decoder bug on one image must not fail the whole task
        return ImageCheck(CORRUPT, f"unexpected {type(e).__name__} while checking: {e}")


def _inspect(data: Optional[bytes], limits: IngestConfig) -> ImageCheck:
    if data is None:
        return ImageCheck(MISSING_IMAGE, "no image bytes for this sample")
    if len(data) == 0:
        return ImageCheck(ZERO_BYTES, "image is 0 bytes")
    if len(data) > limits.max_bytes:
        return ImageCheck(TOO_LARGE, f"{len(data):,} bytes > max_bytes {limits.max_bytes:,}")
    img, refused = _open(data, limits)
    if refused:
        return refused
    with img:
        w, h = img.size
        fmt, mode = img.format, img.mode
        if w * h > limits.max_pixels:
            return ImageCheck(TOO_MANY_PIXELS, f"{w}x{h} = {w * h:,} pixels > max_pixels {limits.max_pixels:,} "
                              "(refused from the header, not decoded)", w, h, fmt, mode)
        if min(w, h) < limits.min_side:
            return ImageCheck(TOO_SMALL, f"{w}x{h}: a side < min_side {limits.min_side}", w, h, fmt, mode)
        bad = _decode(img, data)
        if bad:
            return ImageCheck(bad.reason, bad.detail, w, h, fmt, mode)
    return ImageCheck(None, None, w, h, fmt, mode, hashlib.sha256(data).hexdigest())
