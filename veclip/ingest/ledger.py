"""The `ingest_files` table: which input files a run read completely, so the next run skips them.

    seen = recorded_files(tables)           # {path: (size, mtime, complete)}
    record_files(tables, rows, run_time)    # after bronze and quarantine are written

A file is skipped when it is recorded as complete with the same size and modification time: a
re-downloaded or grown file is read again (its old samples then count as already present). A
damaged file (`truncated_shard`, `corrupt_shard`, `corrupt_source`, `reader_error`) is recorded as not complete and
read again on every run (and recorded again only when it changed). The ledger is written last, after both sample tables, so a run that
stops half way leaves its files to be read again, never lost. Keyed by `source`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from pyspark.sql.types import (BooleanType, DoubleType, LongType, StringType, StructField, StructType,
                               TimestampType)

from veclip.tables import Tables

TABLE = "ingest_files"
SOURCE_DAMAGE = frozenset({"truncated_shard", "corrupt_shard", "corrupt_source", "reader_error"})

INGEST_FILES = StructType([
    StructField("source", StringType(), False),
    StructField("source_format", StringType(), False),
    StructField("size_bytes", LongType(), False),
    StructField("mtime", DoubleType(), False),
    StructField("complete", BooleanType(), False),   # false: damaged, read again next run
    StructField("samples", LongType(), False),       # samples read in the run that recorded it
    StructField("bronze", LongType(), False),
    StructField("quarantine", LongType(), False),
    StructField("already_present", LongType(), False),
    StructField("ingested_at", TimestampType(), False),
])
_UPDATE = [f.name for f in INGEST_FILES if f.name != "source"]


def recorded_files(tables: Tables) -> dict[str, tuple[int, float, bool]]:
    """Path -> (size, mtime, complete) of every file in the ledger."""
    if not tables.exists(TABLE):
        return {}
    rows = tables.read(TABLE).select("source", "size_bytes", "mtime", "complete").collect()
    return {r["source"]: (int(r["size_bytes"]), float(r["mtime"]), bool(r["complete"])) for r in rows}


def record_files(tables: Tables, rows: Iterable[tuple], run_time: datetime) -> None:
    """Upsert one row per file read: (source, format, size, mtime, complete, samples, bronze, quarantine, present)."""
    data = [(*r, run_time) for r in rows]
    if not data:
        return
    df = tables.spark.createDataFrame(data, INGEST_FILES)
    tables.merge(TABLE, df, ["source"], update=_UPDATE)
