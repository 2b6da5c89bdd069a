"""What runs inside Spark tasks (`mapInArrow`): read files, fetch URLs, inspect images, emit rows.

    spark.range(len(files), numPartitions=n).mapInArrow(read_files(files, cfg.ingest), INGESTED_SPARK)

The driver only ships file paths and the `ingest` config section; image bytes are read, fetched and
inspected in the tasks and go straight from there to Delta. Every function returned here is a
picklable closure over the file list and that section, and never raises on bad data (see the readers).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence

import pyarrow as pa

from veclip.config.ingest import IngestConfig
from veclip.ingest.fetch import fetch_all
from veclip.ingest.inputs import InputFile
from veclip.ingest.readers import read_samples
from veclip.ingest.records import Sample, batches, pending, to_row

log = logging.getLogger(__name__)

READER_ERROR = "reader_error"
ArrowFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def _file_ids(batches_in: Iterator[pa.RecordBatch]) -> Iterator[int]:
    for batch in batches_in:
        yield from batch.column("id").to_pylist()


def guarded(samples: Iterator[Sample]) -> Iterator[Sample]:
    """The samples of a reader; an unexpected error becomes a `reader_error` row for the rest of the
    file (which is then read again next run), instead of failing the task and losing its batch."""
    n = 0
    try:
        for s in samples:
            n += 1
            yield s
    except Exception as e:  # noqa: BLE001 - the last line of defence of a task
        log.exception("ingest: reader failed after %d samples", n)
        yield Sample(f"@error{n}", reason=READER_ERROR, detail=f"reader failed after {n} samples: "
                     f"{type(e).__name__}: {e}; the rest of the file is read again next run")


def read_files(files: Sequence[InputFile], cfg: IngestConfig) -> ArrowFn:
    """Task: file ids -> INGESTED rows of the samples in those files (webdataset, image parquet)."""
    files = list(files)

    def run(batches_in: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for i in _file_ids(batches_in):
            f = files[i]
            log.info("ingest: reading %s (%s)", f.source, f.format)
            rows = (to_row(s, f.source, f.format, cfg)
                    for s in guarded(read_samples(f.path, f.format, cfg)))
            yield from batches(rows)

    return run


def read_url_rows(files: Sequence[InputFile], cfg: IngestConfig) -> ArrowFn:
    """Task: file ids -> one INGESTED row per URL row, images not fetched yet (outcome null)."""
    files = list(files)

    def run(batches_in: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for i in _file_ids(batches_in):
            f = files[i]
            samples = guarded(read_samples(f.path, f.format, cfg))
            yield from batches(pending(s, f.source, f.format) for s in samples)

    return run


def _fetched_rows(rows: list[dict], cfg: IngestConfig) -> Iterator[dict]:
    todo = [r for r in rows if r["outcome"] is None]
    results = iter(fetch_all([r["url"] for r in todo], cfg))
    for r in rows:
        if r["outcome"] is not None:  # rejected by the reader (bad record, missing URL, ...)
            yield r
            continue
        got = next(results)
        sample = Sample(r["source_key"], r["url"], r["alt_text_raw"], got.data, got.reason, got.detail)
        row = to_row(sample, r["source"], r["source_format"], cfg)
        if row["outcome"] != "bronze" and got.content_type and got.reason is None:
            row["detail"] = f"{row['detail']} (Content-Type: {got.content_type})"
        yield row


def fetch_images(cfg: IngestConfig) -> ArrowFn:
    """Task: URL rows -> INGESTED rows, fetching `4 x http.concurrency` URLs at a time (bounded memory)."""
    chunk = max(1, 4 * cfg.http.concurrency)

    def run(batches_in: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches_in:
            rows = batch.to_pylist()
            for start in range(0, len(rows), chunk):
                yield from batches(_fetched_rows(rows[start:start + chunk], cfg))

    return run
