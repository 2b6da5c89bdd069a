"""Untrusted image bytes -> a bounded, upright RGB image: the one decoder of the caption and gold stages.

    img = load_rgb(data, min_side=1024, max_pixels=89_478_485)   # PIL RGB image, or UndecodableImage

Decoded memory stays bounded, whatever the file size says (a 343 KB PNG can hold 9400x9400 pixels):
- the pixel count is read from the header and refused above `max_pixels` (`TooManyPixels`) before
  any pixel is decoded; `set_pixel_limit` makes Pillow's own guard (`Image.MAX_IMAGE_PIXELS`) agree;
- JPEGs decode at a reduced scale (DCT scaling, `draft`) no smaller than `min_side`;
- every image is then reduced by an integer factor (box average) so that its shorter side stays at
  least `min_side` and it has at most `output_pixels(min_side)` pixels, *before* RGB conversion:
  the stored mode (1 byte a pixel for palette and grey images) is converted strip by strip, so the
  full-size image is never expanded to RGB/RGBA (3-4x its stored size).
  Peak memory: the codec's own output (at most 4 bytes x max_pixels) + one strip + the result.
Modes: 16-bit grey (I;16, I;16B, I) is scaled to 8 bits (v / 257; Pillow's `convert` clips it,
which turns it white); transparency (RGBA, LA, PA, P with a transparent index) is flattened on
white; EXIF orientation is applied.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Optional

import numpy as np
from PIL import Image

from veclip.config.ingest import IngestConfig

# ingest.max_pixels' default (Pillow's own default limit): ~89.5 Mpx, 256 MB as RGB.
DEFAULT_MAX_PIXELS: int = IngestConfig.model_fields["max_pixels"].default
ORIENTATION = 0x0112  # the EXIF tag
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose
# Source pixels converted at a time when reducing (at most 16 MB as RGBA).
STRIP_PIXELS = 1 << 22


class UndecodableImage(ValueError):
    """The image bytes of a row could not be decoded."""


class TooManyPixels(UndecodableImage):
    """The header announces more pixels than the configured limit: refused before decoding."""


def set_pixel_limit(max_pixels: int) -> None:
    """Pillow's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) from the config's limit.

    Pillow warns above the limit and raises above twice it, in every decoder of this process
    (gallery, trainer, evaluation), not only in `load_rgb`, which refuses at the limit itself.
    """
    Image.MAX_IMAGE_PIXELS = int(max_pixels)


def output_pixels(min_side: int) -> int:
    """Most pixels of a decoded result: room for a 1:16 aspect ratio at `min_side`."""
    return 16 * min_side * min_side


def reduce_factor(width: int, height: int, min_side: int) -> int:
    """The integer shrink factor: as large as keeps the shorter side >= min_side, larger only when
    the result would still exceed `output_pixels(min_side)` (extreme aspect ratios)."""
    keep = max(1, min(width, height) // max(1, min_side))
    need = math.ceil(math.sqrt(width * height / output_pixels(min_side)))
    return max(keep, need, 1)


def has_alpha(img: Image.Image) -> bool:
    """Whether the image's mode can hold transparency (an alpha band, or a palette's transparent index)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def flatten_on_white(img: Image.Image) -> Image.Image:
    """An image with transparency (`has_alpha`) -> RGB, composited over white (the look of a web page)."""
    rgba = img.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def eight_bit(img: Image.Image) -> Image.Image:
    """16/32-bit grey (I;16*, I) -> L, scaled (0..65535 -> 0..255) rather than clipped at 255."""
    if not (img.mode.startswith("I;16") or img.mode == "I"):
        return img
    a = np.asarray(img).astype(np.int64)
    a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(a.astype(np.uint8))  # 2-D uint8: mode L


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB: 16-bit grey scaled, transparency flattened on white (the look of a web page)."""
    img = eight_bit(img)
    if has_alpha(img):
        return flatten_on_white(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def reduce_rgb(img: Image.Image, factor: int) -> Image.Image:
    """RGB image `factor` times smaller (box average), converting `STRIP_PIXELS` source pixels at a time."""
    if factor <= 1:
        return to_rgb(img)
    w, h = img.size
    rows = max(1, STRIP_PIXELS // (w * factor)) * factor  # a multiple of factor: strips reduce seamlessly
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    for top in range(0, h, rows):
        strip = to_rgb(img.crop((0, top, w, min(h, top + rows)))).reduce(factor)
        out.paste(strip, (0, top // factor))
    return out


def load_rgb(data: Optional[bytes], min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> upright RGB image, reduced to a shorter side of at least `min_side` (never enlarged),
    at most `output_pixels(min_side)` pixels; UndecodableImage (TooManyPixels) when it cannot be."""
    if data is None or len(data) == 0:
        raise UndecodableImage("no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the explicit limit below decides
            img = Image.open(io.BytesIO(bytes(data)))
            w, h = img.size
            if w * h > max_pixels:
                raise TooManyPixels(f"{w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}")
            orientation = img.getexif().get(ORIENTATION, 1)  # read now: the reduced copy has no EXIF
            img.draft("RGB", (min_side, min_side))  # JPEG: DCT-scaled decode; other formats: no-op
            img.load()
            img = reduce_rgb(img, reduce_factor(*img.size, min_side))
            turn = _TRANSPOSE.get(orientation)
            return img.transpose(turn) if turn is not None else img
    except UndecodableImage:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        raise UndecodableImage(f"{type(err).__name__}: {err}") from None
