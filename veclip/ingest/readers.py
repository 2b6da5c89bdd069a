"""Read one input file into Samples: img2dataset parquet, URL tables (parquet/CSV/JSONL), VeCap JSON.

    for sample in read_samples("/crawl/urls.csv", "url_table", cfg.ingest): ...

The `ingest` config section names the columns (`url_column`, `text_column`, `image_column`, matched
case-insensitively) and bounds webdataset members (`max_bytes`).
Webdataset shards are read by veclip.ingest.webdataset. Readers run inside Spark tasks, one file
each, streaming (parquet row batches, CSV/JSONL line by line; VeCap JSON is one object and is
loaded whole). Text is repaired, never an error: invalid UTF-8 bytes are decoded as U+FFFD, and
lone surrogates (from JSON escapes such as `\\ud800`) are replaced when the Sample is built
(veclip.ingest.records.Sample). Nothing raises on bad data: a bad JSONL line is a `bad_record` sample, a row without
a URL a `missing_url` sample, and a file that cannot be read (further) one `corrupt_source` sample
for the rest of the file (source_key `@<row>`), after every row read before the damage.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from veclip.config.ingest import IngestConfig
from veclip.ingest.images import MISSING_IMAGE
from veclip.ingest.records import Sample
from veclip.ingest.webdataset import read_webdataset

CORRUPT_SOURCE, BAD_RECORD, MISSING_URL = "corrupt_source", "bad_record", "missing_url"
TEXT_FALLBACKS = ("caption", "text", "alt_text", "alttext", "alt")
IMAGE_FALLBACKS = ("jpg", "png", "webp", "image", "bytes")
_BATCH_ROWS = 256


def find_column(names: Iterable[str], wanted: str, fallbacks: tuple[str, ...] = ()) -> Optional[str]:
    """The actual name of column `wanted` (or of the first fallback present), ignoring case."""
    by_lower = {n.lower(): n for n in names}
    for cand in (wanted, *fallbacks):
        if cand.lower() in by_lower:
            return by_lower[cand.lower()]
    return None


def _str(v) -> Optional[str]:
    if v is None:
        return None
    return v if isinstance(v, str) else str(v)


def _url_sample(row_id: str, url, text) -> Sample:
    url = _str(url)
    if not url or not url.strip():
        return Sample(row_id, None, _str(text), reason=MISSING_URL, detail="row has no URL")
    return Sample(row_id, url, _str(text))


def _corrupt(row: int, e: Exception) -> Sample:
    return Sample(f"@{row}", reason=CORRUPT_SOURCE,
                  detail=f"file unreadable from row {row}: {type(e).__name__}: {e}; later rows are lost")


def _column_values(column: pa.Array) -> list:
    """Python values of one column; a string column is decoded leniently (Parquet does not guarantee
    valid UTF-8, and one bad value must not make the rest of the file unreadable)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        return [None if v is None else v.decode("utf-8", "replace") for v in column.view(binary).to_pylist()]
    return column.to_pylist()


def _parquet_rows(path: str, wanted: dict) -> Iterator[dict]:
    """Rows of the `wanted` columns (logical name -> actual name); raises on damage."""
    pf = pq.ParquetFile(path)
    cols = [c for c in wanted.values() if c]
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
        data = {name: _column_values(batch.column(name)) for name in batch.schema.names}
        for i in range(batch.num_rows):
            yield {name: (data[col][i] if col else None) for name, col in wanted.items()}


def read_image_parquet(path: str, cols: IngestConfig) -> Iterator[Sample]:
    """img2dataset `output_format=parquet`: an image-bytes column beside key, url, caption, status."""
    n = 0
    try:
        names = pq.read_schema(path).names
        wanted = {"image": find_column(names, cols.image_column, IMAGE_FALLBACKS),
                  "url": find_column(names, cols.url_column),
                  "text": find_column(names, cols.text_column, TEXT_FALLBACKS), "key": find_column(names, "key"),
                  "error": find_column(names, "error_message")}
        for row in _parquet_rows(path, wanted):
            sid = _str(row["key"]) or str(n)
            n += 1
            s = Sample(sid, _str(row["url"]), _str(row["text"]), row["image"])
            if s.image is None:
                s.reason, s.detail = MISSING_IMAGE, f"image column is null (error_message: {row['error']!r})"
            yield s
    except Exception as e:  # noqa: BLE001 - any reader failure becomes a quarantine row, never a lost task
        yield _corrupt(n, e)


def _csv_rows(path: str, url_column: str) -> Iterator[dict]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if path.lower().endswith(".tsv") or sample.count("\t") > sample.count(",") else ","
        reader = csv.DictReader(f, delimiter=delimiter)
        if find_column(reader.fieldnames or [], url_column) is None:
            raise ValueError(f"no URL column {url_column!r} (ingest.url_column) in header {reader.fieldnames}")
        yield from reader


def _jsonl_rows(path: str) -> Iterator[object]:
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line.decode("utf-8", "replace"))
            except ValueError as e:
                yield ValueError(f"not JSON: {e}: {line[:80]!r}")


def read_url_table(path: str, cols: IngestConfig) -> Iterator[Sample]:
    """URL + AltText rows; the images are fetched later (veclip.ingest.fetch)."""
    n = 0
    try:
        lower = path.lower()
        if lower.endswith(".parquet"):
            names = pq.read_schema(path).names
            if find_column(names, cols.url_column) is None:
                raise ValueError(f"no URL column {cols.url_column!r} (ingest.url_column) among {names}")
            rows: Iterable = _parquet_rows(path, {"url": find_column(names, cols.url_column),
                                                  "text": find_column(names, cols.text_column, TEXT_FALLBACKS)})
        else:
            rows = _csv_rows(path, cols.url_column) if lower.endswith((".csv", ".tsv")) else _jsonl_rows(path)
        url_col = text_col = None
        for row in rows:
            sid = str(n)
            n += 1
            if not isinstance(row, dict):
                yield Sample(sid, reason=BAD_RECORD, detail=str(row) if isinstance(row, Exception)
                             else f"line is a JSON {type(row).__name__}, not an object")
                continue
            if url_col is None:
                url_col = find_column(row, cols.url_column) or cols.url_column
                text_col = find_column(row, cols.text_column, TEXT_FALLBACKS) or cols.text_column
            yield _url_sample(sid, row.get(url_col), row.get(text_col))
    except Exception as e:  # noqa: BLE001
        yield _corrupt(n, e)


def read_vecap_json(path: str) -> Iterator[Sample]:
    """The VeCap release: one JSON object `{url: caption}` (a list of {url, caption} is accepted too)."""
    try:
        with open(path, "rb") as f:
            data = json.load(io.TextIOWrapper(f, encoding="utf-8", errors="replace"))
    except Exception as e:  # noqa: BLE001
        yield _corrupt(0, e)
        return
    if isinstance(data, dict):
        pairs = data.items()
    elif isinstance(data, list):
        pairs = ((r.get("url"), r.get("caption")) if isinstance(r, dict) else (None, None) for r in data)
    else:
        yield _corrupt(0, ValueError(f"top level is a JSON {type(data).__name__}, expected {{url: caption}}"))
        return
    for i, (url, caption) in enumerate(pairs):
        yield _url_sample(str(i), url, caption)


def read_samples(path: str, fmt: str, cols: IngestConfig) -> Iterator[Sample]:
    """Dispatch on the input format (see veclip.ingest.inputs.detect_format)."""
    if fmt == "webdataset":
        return read_webdataset(path, cols.max_bytes)
    if fmt == "parquet":
        return read_image_parquet(path, cols)
    if fmt == "url_table":
        return read_url_table(path, cols)
    if fmt == "vecap_json":
        return read_vecap_json(path)
    raise ValueError(f"ingest: unknown input format {fmt!r} for {path}")
