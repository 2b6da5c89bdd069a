"""Bronze rows for dedupe tests and benchmarks, made from real images (no ingest needed).

    originals = cc12m_samples(shard_path)                    # [(source_key, jpeg, alt text, url)]
    copy = AUGMENTS["crop"](jpeg_bytes, seed=1)              # a near-duplicate of the image
    df = bronze_frame(spark, [bronze_row(data, alt, source="x.tar", source_key="001"), ...])
    Tables(cfg, spark).merge("bronze", df, ["key"])

Augmentations are what a re-crawl does to a photo: re-encode, lossless re-save, resize, crop a few
percent, shift colours slightly, stamp a watermark. Each takes (bytes, seed) and returns new bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import random
import tarfile
from typing import Callable, Optional

from PIL import Image, ImageDraw, ImageEnhance

from veclip.schemas import BRONZE


def _open_rgb(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    return img.convert("RGB")


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def reencode(data: bytes, seed: int = 0) -> bytes:
    return _jpeg(_open_rgb(data), quality=random.Random(seed).randint(55, 80))


def lossless(data: bytes, seed: int = 0) -> bytes:
    """Same decoded pixels, other bytes: PNG (RGBA with an opaque alpha on odd seeds)."""
    img = _open_rgb(data)
    if seed % 2:
        img = img.convert("RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def resize(data: bytes, seed: int = 0) -> bytes:
    img = _open_rgb(data)
    s = random.Random(seed).uniform(0.45, 0.8)
    small = img.resize((max(8, round(img.width * s)), max(8, round(img.height * s))), Image.Resampling.BILINEAR)
    return _jpeg(small, 85)


def crop(data: bytes, seed: int = 0) -> bytes:
    """Cut 1-4% off each side (different amounts per side)."""
    img = _open_rgb(data)
    r = random.Random(seed)
    w, h = img.size
    box = (round(w * r.uniform(0.01, 0.04)), round(h * r.uniform(0.01, 0.04)),
           w - round(w * r.uniform(0.01, 0.04)), h - round(h * r.uniform(0.01, 0.04)))
    return _jpeg(img.crop(box), 88)


def colour(data: bytes, seed: int = 0) -> bytes:
    img = _open_rgb(data)
    r = random.Random(seed)
    img = ImageEnhance.Brightness(img).enhance(r.uniform(0.88, 1.12))
    img = ImageEnhance.Color(img).enhance(r.uniform(0.8, 1.25))
    img = ImageEnhance.Contrast(img).enhance(r.uniform(0.9, 1.1))
    return _jpeg(img, 88)


def watermark(data: bytes, seed: int = 0) -> bytes:
    """A semi-transparent text stamp near a corner, like a stock-photo site's."""
    img = _open_rgb(data).convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    r = random.Random(seed)
    text = r.choice(["(c) shop.example", "SAMPLE", "stock.example.com"])
    x, y = round(img.width * r.uniform(0.55, 0.7)), round(img.height * r.uniform(0.82, 0.9))
    draw.text((x, y), text, fill=(255, 255, 255, 150))
    return _jpeg(Image.alpha_composite(img, layer).convert("RGB"), 88)


AUGMENTS: dict[str, Callable[[bytes, int], bytes]] = {
    "reencode": reencode, "lossless": lossless, "resize": resize, "crop": crop,
    "colour": colour, "watermark": watermark,
}


def cc12m_samples(shard: str) -> list[tuple[str, bytes, Optional[str], Optional[str]]]:
    """(source_key, image bytes, AltText, url) for each sample of an img2dataset webdataset shard."""
    parts: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            if m.isfile() and "." in m.name:
                stem, ext = m.name.rsplit(".", 1)
                parts.setdefault(stem, {})[ext] = tar.extractfile(m).read()
    out = []
    for stem in sorted(parts):
        p = parts[stem]
        if "jpg" in p:
            url = json.loads(p["json"]).get("url") if "json" in p else None
            out.append((stem, p["jpg"], p.get("txt", b"").decode("utf-8") or None, url))
    return out


def bronze_row(data: bytes, alt_text: Optional[str], source: str, source_key: str,
               url: Optional[str] = None, size: Optional[tuple[int, int]] = None) -> dict:
    """A row with exactly the BRONZE columns. The key hashes source + source_key (stable on re-read)."""
    if size is None:
        try:
            with Image.open(io.BytesIO(data)) as img:
                size, fmt, mode = img.size, img.format, img.mode
        except Exception:  # noqa: BLE001 - tests also need rows whose bytes are broken
            size, fmt, mode = (0, 0), "JPEG", "RGB"
    else:
        fmt, mode = "JPEG", "RGB"
    return {
        "key": hashlib.sha256(f"{source}\0{source_key}".encode()).hexdigest()[:24],
        "url": url, "image": data, "image_sha256": hashlib.sha256(data).hexdigest(),
        "width": int(size[0]), "height": int(size[1]), "image_format": fmt, "image_mode": mode,
        "alt_text_raw": alt_text, "alt_text": alt_text.strip() if alt_text else alt_text,
        "source": source, "source_key": source_key, "source_format": "webdataset",
        "ingested_at": dt.datetime(2024, 1, 1),
    }


def bronze_frame(spark, rows: list[dict]):
    """A Spark DataFrame with the BRONZE schema."""
    return spark.createDataFrame([tuple(r[f.name] for f in BRONZE.fields) for r in rows], BRONZE)


def heavy_crop(data: bytes, seed: int = 0) -> bytes:
    """Cut 8% off the left and 4% off top and bottom: beyond the pHash threshold, within the looser one."""
    img = _open_rgb(data)
    w, h = img.size
    return _jpeg(img.crop((int(w * 0.08), int(h * 0.04), w, h - int(h * 0.04))), 85)


def upscale(data: bytes, seed: int = 0) -> bytes:
    img = _open_rgb(data)
    return _jpeg(img.resize((img.width * 3 // 2, img.height * 3 // 2), Image.Resampling.BICUBIC), 90)


class Scenario:
    """Bronze rows with known duplicate groups: `expected[key]` is the original key of its group."""

    def __init__(self, originals: list[tuple[str, bytes, Optional[str], Optional[str]]], source: str):
        self.rows: list[dict] = []
        self.expected: dict[str, str] = {}
        self.by_name: dict[str, dict] = {}
        self.originals = []
        for stem, data, alt, url in originals:
            row = self.add(data, alt, source, stem, url=url)
            self.originals.append(row["key"])

    def add(self, data: bytes, alt: Optional[str], source: str, source_key: str, of: Optional[str] = None,
            url: Optional[str] = None, name: Optional[str] = None) -> dict:
        row = bronze_row(data, alt, source, source_key, url=url)
        self.rows.append(row)
        self.expected[row["key"]] = self.expected[of] if of else row["key"]
        self.by_name[name or source_key] = row
        return row

    def copy(self, i: int, how: str, alt: Optional[str], source: str, name: Optional[str] = None) -> dict:
        """Add `how`(original i) (an AUGMENTS name, "heavy_crop", "upscale" or "bytes") as a copy of it."""
        orig = self.rows[i]
        fn = {"heavy_crop": heavy_crop, "upscale": upscale, "bytes": lambda d, s: d}.get(how) or AUGMENTS[how]
        return self.add(fn(orig["image"], i), alt, source, f"{how}-{i}", of=orig["key"], name=name)
