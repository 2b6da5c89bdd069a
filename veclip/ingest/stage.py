"""The ingest stage: crawl files -> `bronze` (accepted samples) + `quarantine` (rejected, with a reason).

    report = run_ingest(cfg, spark)      # or: spark-submit jobs/ingest.py --set ingest.inputs=PATH

Plan: the driver lists the input files (names and sizes only) and skips those the `ingest_files`
ledger marks complete. Webdataset shards and image parquet files are spread over tasks, which read,
inspect and clean their samples. URL tables and VeCap JSON are read into URL rows by tasks; rows
whose key is already in bronze or quarantine are dropped *before* any download, the rest are spread
`urls_per_partition` per task and downloaded there. Every sample then gets a fate: `present` (key
already in bronze or quarantine), `duplicate` (key seen earlier in this run: an accepted copy wins,
then the first by source and source key) or `new`. New samples are MERGEd into bronze or
quarantine; nothing else is written. Accounting per file and in total:
    read = bronze + quarantine + already_present + duplicate_in_input

With `ingest.retry_quarantined` (`--retry-quarantined`) quarantine rows with a transient reason
(veclip.ingest.retry) do not count as present: their files are read again (the ledger does not skip
them), their URLs downloaded again, a failure again updates the row (counted in `quarantine`), and a
key that now reaches bronze has its quarantine row deleted (`recovered`), as have the damage
placeholders of a file now read whole.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime, timezone
from functools import reduce
from typing import Optional, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from veclip.config import Config
from veclip.ingest import ledger, retry
from veclip.ingest.inputs import InputFile, expand_inputs
from veclip.ingest.records import BRONZE_OUTCOME, INGESTED, QUARANTINE_OUTCOME
from veclip.ingest.tasks import fetch_images, read_files, read_url_rows
from veclip.progress import SparkProgress
from veclip.report import StageReport
from veclip.schemas import BRONZE, QUARANTINE
from veclip.tables import Tables

log = logging.getLogger(__name__)

STAGE = "ingest"
URL_FORMATS = ("url_table", "vecap_json")
INGESTED_SPARK = from_arrow_schema(INGESTED)
TOTALS = ("read", "bronze", "quarantine", "already_present", "duplicate_in_input")


def retry_requested(cfg: Config, retry_quarantined: bool = False) -> bool:
    """`retry_quarantined` (the flag `--retry-quarantined`), or `ingest.retry_quarantined` in the config."""
    return retry_quarantined or cfg.ingest.retry_quarantined


def existing_keys(tables: Tables, quarantine_version: Optional[int] = None,
                  retrying: bool = False) -> Optional[DataFrame]:
    """Keys already in bronze or in the ingest part of quarantine, with `_present` = true; when
    `retrying`, quarantine rows with a transient reason are not present (they are tried again)."""
    parts = []
    if tables.exists("bronze"):
        parts.append(tables.read("bronze").select("key"))
    if tables.exists("quarantine"):
        q = tables.read("quarantine", quarantine_version).where(F.col("stage") == STAGE)
        if retrying:
            q = q.where(~retry.transient(F.col("reason")))
        parts.append(q.select("key"))
    if not parts:
        return None
    return reduce(DataFrame.unionByName, parts).distinct().withColumn("_present", F.lit(True))


def with_fate(df: DataFrame, existing: Optional[DataFrame]) -> DataFrame:
    """Add `fate`: present | duplicate | new (see the module docstring)."""
    order = [F.when(F.col("outcome") == BRONZE_OUTCOME, 0).otherwise(1), F.col("source"), F.col("source_key")]
    ranked = df.withColumn("_rank", F.row_number().over(Window.partitionBy("key").orderBy(*order)))
    if existing is not None:
        ranked = ranked.join(existing, on="key", how="left")
    else:
        ranked = ranked.withColumn("_present", F.lit(None).cast("boolean"))
    fate = (F.when(F.col("_present"), "present").when(F.col("_rank") > 1, "duplicate").otherwise("new"))
    return ranked.withColumn("fate", fate).drop("_rank", "_present")


def _counts(df: DataFrame) -> list[tuple]:
    """(source, fate, outcome, reason, n) for every combination present."""
    rows = df.groupBy("source", "fate", "outcome", "reason").count().collect()
    return [(r["source"], r["fate"], r["outcome"], r["reason"], int(r["count"])) for r in rows]


def _url_samples(spark: SparkSession, files: list[InputFile], cfg: Config,
                 existing: Optional[DataFrame]) -> tuple[DataFrame, list[tuple], DataFrame]:
    """URL rows -> (downloaded rows of new keys, counts of all URL rows, the persisted URL rows)."""
    rows = spark.range(len(files), numPartitions=len(files)).mapInArrow(read_url_rows(files, cfg.ingest),
                                                                         INGESTED_SPARK)
    fated = with_fate(rows, existing).persist(StorageLevel.MEMORY_AND_DISK)
    counts = _counts(fated)
    n_new = sum(n for _, fate, _, _, n in counts if fate == "new")
    tasks = max(1, math.ceil(n_new / cfg.ingest.urls_per_partition))
    log.info("ingest: %d URL rows to download in %d tasks", n_new, tasks)
    todo = fated.where(F.col("fate") == "new").drop("fate").repartition(tasks)
    return todo.mapInArrow(fetch_images(cfg.ingest), INGESTED_SPARK), counts, fated


def _file_samples(spark: SparkSession, files: list[InputFile], cfg: Config) -> DataFrame:
    tasks = max(1, math.ceil(len(files) / cfg.ingest.files_per_partition))
    return spark.range(len(files), numPartitions=tasks).mapInArrow(read_files(files, cfg.ingest), INGESTED_SPARK)


def bronze_rows(fated: DataFrame, run_time: datetime) -> DataFrame:
    new = fated.where((F.col("fate") == "new") & (F.col("outcome") == BRONZE_OUTCOME))
    cols = {"ingested_at": F.lit(run_time)}
    return new.select(*[cols.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in BRONZE])


def quarantine_rows(fated: DataFrame, run_time: datetime) -> DataFrame:
    new = fated.where((F.col("fate") == "new") & (F.col("outcome") == QUARANTINE_OUTCOME))
    cols = {"stage": F.lit(STAGE), "quarantined_at": F.lit(run_time)}
    return new.select(*[cols.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in QUARANTINE])


def per_file(url_counts: list[tuple], counts: list[tuple], url_sources: set[str]) -> dict[str, dict]:
    """Totals per source file, and the reasons of its quarantined and damaged samples."""
    out: dict[str, dict] = defaultdict(lambda: {**{k: 0 for k in TOTALS}, "reasons": defaultdict(int),
                                                "damaged": False})
    for source, fate, outcome, reason, n in url_counts:
        out[source]["read"] += n  # URL rows are read once here; their downloads are counted below
    for source, fate, outcome, reason, n in url_counts + counts:
        f = out[source]
        f["damaged"] |= reason in ledger.SOURCE_DAMAGE
        if fate == "present":
            f["already_present"] += n
        elif fate == "duplicate":
            f["duplicate_in_input"] += n
    for source, fate, outcome, reason, n in counts:
        f = out[source]
        if source not in url_sources:
            f["read"] += n
        if fate == "new":
            f[outcome] += n
            if outcome == QUARANTINE_OUTCOME:
                f["reasons"][reason] += n
    return out


def _report(report: StageReport, files: dict[str, dict], planned: dict[str, int], inserted: dict[str, int]) -> None:
    expected = {k: sum(f[k] for f in files.values()) for k in TOTALS}
    reasons: dict[str, int] = defaultdict(int)
    for f in files.values():
        for reason, n in f["reasons"].items():
            reasons[reason] += n
    report.count("read", expected["read"])
    # What the MERGEs actually inserted: if it differs from what was planned, the identity breaks.
    report.count("bronze", inserted["bronze"])
    report.count("quarantine", inserted["quarantine"])
    report.count("already_present", expected["already_present"])
    report.count("duplicate_in_input", expected["duplicate_in_input"])
    for reason in sorted(reasons):
        report.count(f"quarantine.{reason}", reasons[reason])
    report.identity("read = bronze + quarantine + already_present + duplicate_in_input",
                    ["read"], ["bronze", "quarantine", "already_present", "duplicate_in_input"])
    report.identity("bronze: planned = inserted", ["planned_bronze"], ["bronze"])
    report.identity("quarantine: planned = inserted", ["planned_quarantine"], ["quarantine"])
    report.count("planned_bronze", planned["bronze"])
    report.count("planned_quarantine", planned["quarantine"])
    damaged = sorted(s for s, f in files.items() if f["damaged"])
    if damaged:
        report.details["damaged files (read again next run)"] = ", ".join(damaged[:5]) + (" ..." if len(damaged) > 5 else "")


def _ledger_rows(todo: list[InputFile], files: dict[str, dict], seen: dict) -> list[tuple]:
    """Ledger rows of the files read, except damaged files already recorded as such, unchanged."""
    rows = []
    for f in todo:
        c = files.get(f.source) or {**{k: 0 for k in TOTALS}, "damaged": False}
        if c["damaged"] and seen.get(f.source) == (f.size, f.mtime, False):
            continue
        rows.append((f.source, f.format, f.size, f.mtime, not c["damaged"], c["read"], c["bronze"],
                     c["quarantine"], c["already_present"] + c["duplicate_in_input"]))
    return rows


def _select_files(cfg: Config, files: list[InputFile], seen: dict, report: StageReport,
                  retry_sources: frozenset = frozenset()) -> list[InputFile]:
    """The files to read: all, less those the ledger records as complete and unchanged (a file holding
    samples to retry is read again)."""
    skip = cfg.ingest.skip_ingested_files
    todo = [f for f in files if f.source in retry_sources
            or not (skip and seen.get(f.source) == (f.size, f.mtime, True))]
    report.count("files", len(files))
    report.count("files_skipped", len(files) - len(todo))
    by_format: dict[str, int] = defaultdict(int)
    for f in todo:
        by_format[f.format] += 1
    report.details["files to read"] = ", ".join(f"{n} {k}" for k, n in sorted(by_format.items())) or "none"
    log.info("ingest: %d input files, %d already ingested, reading %d", len(files), len(files) - len(todo), len(todo))
    return todo


def _samples(spark: SparkSession, cfg: Config, todo: list[InputFile], existing: Optional[DataFrame],
             cached: list[DataFrame]) -> tuple[Optional[DataFrame], list[tuple], list[tuple]]:
    """(every sample of the files with its fate, persisted; counts of URL rows; counts of samples)."""
    url_files = [f for f in todo if f.format in URL_FORMATS]
    shard_files = [f for f in todo if f.format not in URL_FORMATS]
    parts, url_counts = [], []
    if url_files:
        fetched, url_counts, url_rows = _url_samples(spark, url_files, cfg, existing)
        cached.append(url_rows)
        parts.append(fetched)
    if shard_files:
        parts.append(_file_samples(spark, shard_files, cfg))
    if not parts:
        return None, url_counts, []
    # A local checkpoint, not persist(): `existing` reads bronze and quarantine, so the MERGE into bronze
    # invalidates a cached plan over them, and the quarantine MERGE would then download every URL again
    # (and see other outcomes). The checkpoint runs the reading, downloads and inspection exactly once.
    fated = with_fate(reduce(DataFrame.unionByName, parts), existing).localCheckpoint(
        eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    cached.append(fated)
    return fated, url_counts, _counts(fated)


def _write(tables: Tables, fated: Optional[DataFrame], planned: dict[str, int], run_time: datetime,
           report: StageReport, retrying: bool = False) -> dict[str, int]:
    """MERGE the new samples. Both tables are created even when empty: later stages and notebooks read them.
    When retrying, a retried key that fails again updates its quarantine row (counted as written)."""
    inserted = {}
    for name, keys, rows, schema in (("bronze", ["key"], bronze_rows, BRONZE),
                                     ("quarantine", ["key", "stage"], quarantine_rows, QUARANTINE)):
        inserted[name] = 0
        if planned[name] or not tables.exists(name):
            df = rows(fated, run_time) if fated is not None else tables.spark.createDataFrame([], schema)
            update = [c for c in schema.fieldNames() if c not in keys] if retrying and name == "quarantine" else None
            result = tables.merge(name, df, keys, update=update)
            inserted[name] = result.inserted + result.updated
            report.details[f"{name} version"] = result.version
    return inserted


def _forget_recovered(tables: Tables, retryable: DataFrame, cached: list[DataFrame], read_sources: set[str],
                      report: StageReport) -> None:
    """After the writes: count the retried rows, delete the quarantine rows of those that recovered."""
    report.count("retried", retryable.count())
    produced = reduce(DataFrame.unionByName, [df.select("key") for df in cached]) if cached else \
        tables.spark.createDataFrame([], "key string")
    report.count("recovered", retry.forget_recovered(tables, STAGE, retryable, produced, read_sources))


def run_ingest(cfg: Config, spark: SparkSession, *, inputs: Sequence[str] = (),
               retry_quarantined: bool = False) -> StageReport:
    """Ingest `cfg.ingest.inputs` (plus `inputs`, if any) into bronze and quarantine."""
    report = StageReport(STAGE)
    tables = Tables(cfg, spark)
    run_time = datetime.now(timezone.utc)
    extra = list(inputs)
    files = expand_inputs(list(cfg.ingest.inputs) + extra, cfg.ingest.format, cfg.ingest.image_column)
    seen = ledger.recorded_files(tables)
    retrying = retry_requested(cfg, retry_quarantined)
    q_version = tables.version("quarantine") if tables.exists("quarantine") else None
    retryable = retry.transient_rows(tables, STAGE, q_version) if retrying else None
    retry_sources = frozenset(r["source"] for r in retryable.select("source").distinct().collect()) \
        if retryable is not None else frozenset()
    todo = _select_files(cfg, files, seen, report, retry_sources)
    url_sources = {f.source for f in todo if f.format in URL_FORMATS}
    cached: list[DataFrame] = []
    try:
        with SparkProgress(spark, STAGE):
            existing = existing_keys(tables, q_version, retrying)
            fated, url_counts, counts = _samples(spark, cfg, todo, existing, cached)
            by_source = per_file(url_counts, counts, url_sources)
            planned = {k: sum(f[k] for f in by_source.values()) for k in ("bronze", "quarantine")}
            inserted = _write(tables, fated, planned, run_time, report, retrying)
            if retryable is not None:
                _forget_recovered(tables, retryable, cached, {f.source for f in todo}, report)
        _report(report, by_source, planned, inserted)
        if not report.broken():
            ledger.record_files(tables, _ledger_rows(todo, by_source, seen), run_time)
    finally:
        for df in cached:
            df.unpersist()
    return report.finish()
