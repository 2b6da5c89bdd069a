"""One crawled sample on its way to bronze or quarantine: its stable key, and the row it becomes.

    sample_key(url="https://x/cat.jpg")                                  # sha256 of the URL
    sample_key(url=None, source="/crawl/00001.tar", source_key="000017")  # sha256 of "00001.tar\\0000017"

The key is the hex sha256 of the URL (surrounding whitespace removed) when the sample has one, so
the same image URL gets the same key in any shard, table or re-run; otherwise the hex sha256 of
the source file's *name* (not its directory, so a crawl can move) and the sample's id inside that
file, joined by a NUL byte. Text that is not valid Unicode (a lone surrogate) is keyed as its
repaired form (veclip.ingest.text.repair_text), so a key is never an error. Two different crawls with equally named shards and URL-less samples
would collide: give shards unique names (img2dataset always records the URL, so this is rare).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa

from veclip.config.ingest import IngestConfig
from veclip.ingest.images import inspect_image
from veclip.ingest.text import clean_alt_text, repair_text

BRONZE_OUTCOME, QUARANTINE_OUTCOME = "bronze", "quarantine"


def sample_key(url: Optional[str] = None, source: Optional[str] = None, source_key: Optional[str] = None) -> str:
    """Stable hex id of a sample (see the module docstring)."""
    if url is not None and url.strip():
        return hashlib.sha256(repair_text(url.strip()).encode("utf-8")).hexdigest()
    if source is None or source_key is None:
        raise ValueError("sample_key needs a url, or both source and source_key")
    name = os.path.basename(source.rstrip("/"))
    return hashlib.sha256(repair_text(f"{name}\0{source_key}").encode("utf-8")).hexdigest()


_TEXT_FIELDS = frozenset({"source_key", "url", "alt_text_raw", "reason", "detail"})


@dataclass
class Sample:
    """What a reader found. `reason` set means the reader already knows it is rejected.

    This is the reader boundary: every text field, set by any reader at creation or later, is
    repaired to valid Unicode here (lone surrogates -> U+FFFD), so no crawled string can fail the
    key, the Arrow batch or the Delta write.
    """

    source_key: Optional[str]
    url: Optional[str] = None
    alt_text_raw: Optional[str] = None
    image: Optional[bytes] = None
    reason: Optional[str] = None
    detail: Optional[str] = None

    def __setattr__(self, name, value):
        if name in _TEXT_FIELDS and isinstance(value, str):
            value = repair_text(value)
        super().__setattr__(name, value)


# What the ingest tasks return: bronze and quarantine columns side by side, plus `outcome`.
# (`ingested_at` and the quarantine `stage` are added on the driver.)
INGESTED = pa.schema([
    ("key", pa.string()), ("outcome", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("url", pa.string()), ("image", pa.binary()), ("image_sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("image_format", pa.string()), ("image_mode", pa.string()),
    ("alt_text_raw", pa.string()), ("alt_text", pa.string()),
    ("source", pa.string()), ("source_key", pa.string()), ("source_format", pa.string()),
])


def _clean_url(url: Optional[str]) -> Optional[str]:
    return url.strip() if isinstance(url, str) and url.strip() else None


def rejected(sample: Sample, source: str, source_format: str, reason: str, detail: Optional[str]) -> dict:
    url = _clean_url(sample.url)
    return {"key": sample_key(url, source, sample.source_key), "outcome": QUARANTINE_OUTCOME,
            "reason": reason, "detail": repair_text((detail or "")[:1000]) or None, "url": url,
            "alt_text_raw": sample.alt_text_raw, "source": source, "source_key": sample.source_key,
            "source_format": source_format}


def pending(sample: Sample, source: str, source_format: str) -> dict:
    """A URL row waiting for its image (outcome not decided), or its rejection when already known."""
    if sample.reason:
        return rejected(sample, source, source_format, sample.reason, sample.detail)
    url = _clean_url(sample.url)
    return {"key": sample_key(url, source, sample.source_key), "outcome": None, "url": url,
            "alt_text_raw": sample.alt_text_raw, "source": source, "source_key": sample.source_key,
            "source_format": source_format}


def to_row(sample: Sample, source: str, source_format: str, cfg: IngestConfig) -> dict:
    """The INGESTED row of a sample: inspected against the image limits of the `ingest` config
    section, AltText cleaned to `alt_text_max_chars`, keyed, with its outcome."""
    if sample.reason:
        return rejected(sample, source, source_format, sample.reason, sample.detail)
    check = inspect_image(sample.image, cfg)
    if not check.ok:
        return rejected(sample, source, source_format, check.reason, check.detail)
    url = _clean_url(sample.url)
    return {"key": sample_key(url, source, sample.source_key), "outcome": BRONZE_OUTCOME,
            "reason": None, "detail": None, "url": url, "image": sample.image,
            "image_sha256": check.sha256, "width": check.width, "height": check.height,
            "image_format": check.format, "image_mode": check.mode,
            "alt_text_raw": sample.alt_text_raw,
            "alt_text": clean_alt_text(sample.alt_text_raw, cfg.alt_text_max_chars),
            "source": source, "source_key": sample.source_key, "source_format": source_format}


def batches(rows, max_rows: int = 64, max_bytes: int = 64 << 20):
    """Group row dicts into Arrow record batches of bounded rows and image bytes."""
    buf, size = [], 0
    for row in rows:
        buf.append(row)
        size += len(row.get("image") or b"")
        if len(buf) >= max_rows or size >= max_bytes:
            yield pa.RecordBatch.from_pylist(buf, schema=INGESTED)
            buf, size = [], 0
    if buf:
        yield pa.RecordBatch.from_pylist(buf, schema=INGESTED)
