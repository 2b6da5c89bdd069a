"""Rewrite stage: canonical rows with a caption and no VeCap from the configured rewriter -> `vecap`.

    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite [--retry-errors]
    report = run_rewrite(cfg, spark, args)

Reads `veclip.tables.canonical_samples` (bronze `alt_text`) joined with the `captions` rows of the
fused captioner (`rewrite.captioner`, default `caption.captioner_id`) that have a caption and no error.
Writes the `vecap` Delta table keyed by (key, rewriter), exactly the columns of veclip.schemas.VECAP:
the VeCap, whether the documented fallback replaced the LLM output (`fallback_used`), model id and
revision, prompt version and hash, generation parameters, per-row error and timestamps.

Resumable: the rows still missing are split into slices of about `rewrite.commit_every` rows (by a
hash of the key) and each slice is generated and MERGEd on its own, so a kill loses at most one
slice and a rerun does only what is missing. The MERGE on (key, rewriter) never duplicates a pair.
`--retry-errors` also redoes rows whose rewrite failed and overwrites them. A failure storm (more
than `rewrite.max_failure_rate` of this run's rows failing) raises `FailureRateExceeded` after the
slice that shows it: the job exits non-zero, the failed rows stay error rows for `--retry-errors`.

Inference goes through veclip.inference.map_batches, like the captioner: the model loads once per
Python worker, batches are regrouped, a failing batch is split and retried.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from veclip.config import Config
from veclip.inference import error_kind, map_batches
from veclip.progress import Progress, SparkProgress
from veclip.report import StageReport, check_failure_rate
from veclip.rewrite.rewriter import RewriterLoader
from veclip.schemas import VECAP
from veclip.tables import Tables, canonical_samples

log = logging.getLogger(__name__)

KEYS = ["key", "rewriter"]
UPDATE = [c for c in VECAP.fieldNames() if c not in KEYS]   # what --retry-errors overwrites
RESULT = StructType([StructField("vecap", StringType()), StructField("fallback_used", BooleanType()),
                     StructField("reason", StringType())])


def captioner_of(cfg: Config) -> str:
    captioner = cfg.rewrite.captioner or getattr(cfg.caption, "captioner_id", None)
    if not captioner:
        raise ValueError("rewrite: no captioner to fuse: set caption.captioner_id or rewrite.captioner")
    return captioner


def work(tables: Tables, captioner: str, rewriter: str, retry_errors: bool) -> tuple[DataFrame, dict]:
    """(rows to rewrite: key, alt_text, caption; counts) from one pass over canonical + captions + vecap."""
    canonical = canonical_samples(tables).select("key", "alt_text")
    caps = (tables.read("captions").where(F.col("captioner") == captioner)
            .where("error IS NULL AND caption IS NOT NULL").select("key", "caption"))
    done = tables.read("vecap").where(F.col("rewriter") == rewriter)
    if retry_errors:
        done = done.where("error IS NULL")
    rows = (canonical.join(caps, "key", "left")
            .join(done.select("key").distinct().withColumn("_done", F.lit(True)), "key", "left"))
    agg = rows.agg(F.count("*").alias("canonical"), F.count("caption").alias("captioned"),
                   F.count(F.when(F.col("caption").isNotNull() & F.col("_done"), 1)).alias("done")).first()
    counts = {"canonical": agg["canonical"], "no_caption": agg["canonical"] - agg["captioned"],
              "already_done": agg["done"], "to_rewrite": agg["captioned"] - agg["done"]}
    todo = rows.where(F.col("caption").isNotNull() & F.col("_done").isNull()).select("key", "alt_text", "caption")
    return todo, counts


def with_provenance(out: DataFrame, cfg: Config, loader: RewriterLoader, captioner: str) -> DataFrame:
    """map_batches output (key, result JSON, error, times) -> the VECAP columns plus `_reason`."""
    r = cfg.rewrite
    parsed = out.withColumn("_r", F.from_json("result", RESULT))
    values = {
        "rewriter": F.lit(r.rewriter_id), "captioner": F.lit(captioner), "vecap": F.col("_r.vecap"),
        "fallback_used": F.coalesce(F.col("_r.fallback_used"), F.lit(False)),
        "model_id": F.lit(loader.source.model_id()), "model_revision": F.lit(loader.source.revision_label()),
        "prompt_version": F.lit(loader.spec.version), "prompt_sha256": F.lit(loader.spec.sha256),
        "generation_params": F.lit(loader.params.as_json(batch_size=r.batch_size, dtype=r.dtype,
                                                         prompt_file=loader.spec.path)),
    }
    cols = [(values[f.name] if f.name in values else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in VECAP.fields]
    return parsed.select(*cols, F.col("_r.reason").alias("_reason"))


def cache_key(loader: RewriterLoader) -> str:
    """Workers keep one model per distinct loader (model, prompt, parameters)."""
    return f"rewriter:{hashlib.sha256(repr(loader).encode()).hexdigest()[:16]}"


def gpu_profile(spark: SparkSession, gpus_per_task: float):
    from veclip.caption.stage import gpu_profile as shared  # one definition, shared with the captioner

    return shared(spark, gpus_per_task)


def rewrite_slice(spark: SparkSession, tables: Tables, rows: DataFrame, expected: float, cfg: Config,
                  loader: RewriterLoader, captioner: str) -> Counter:
    """Rewrite one slice and MERGE it; returns a Counter of outcomes (rewritten / fallback:REASON / failed:ERROR)."""
    r = cfg.rewrite
    parts = r.partitions or max(1, min(spark.sparkContext.defaultParallelism, math.ceil(expected / r.batch_size)))
    out = map_batches(rows.repartition(parts), loader, cache_key(loader), r.batch_size,
                      keep=["key"], output="result", profile=gpu_profile(spark, r.gpus_per_task))
    # Generate exactly once: a MERGE may read its source twice.
    result = with_provenance(out, cfg, loader, captioner).localCheckpoint(eager=True)
    outcome = Counter()
    for row in result.groupBy(error_kind("error").alias("kind"), "fallback_used", "_reason").count().collect():
        label = (f"failed:{row['kind']}" if row["kind"] is not None else
                 f"fallback:{row['_reason']}" if row["fallback_used"] else "rewritten")
        outcome[label] += int(row["count"])
    tables.merge("vecap", result.drop("_reason"), KEYS, update=UPDATE)
    return outcome


def outcome_counts(outcome: Counter) -> dict[str, int]:
    """rewrite_slice outcomes -> the report's rewritten / fallback / failed counts."""
    return {"rewritten": outcome["rewritten"],
            "fallback": sum(v for k, v in outcome.items() if k.startswith("fallback:")),
            "failed": sum(v for k, v in outcome.items() if k.startswith("failed:"))}


def ensure_table(spark: SparkSession, tables: Tables) -> None:
    """Create the vecap table empty with exactly the VECAP schema (nullability included)."""
    if not tables.exists("vecap"):
        tables.merge("vecap", spark.createDataFrame([], VECAP), KEYS)


def count_rows(tables: Tables, rewriter: str, captioner: str) -> int:
    """Canonical rows with a usable caption that have a VeCap row from `rewriter`."""
    return work(tables, captioner, rewriter, retry_errors=False)[1]["already_done"]


def run_rewrite(cfg: Config, spark: SparkSession, args=None) -> StageReport:
    """Write a VeCap for every canonical captioned row that lacks one from `rewrite.rewriter_id`."""
    r = cfg.rewrite
    retry = bool(getattr(args, "retry_errors", False))
    tables = Tables(cfg, spark)
    captioner = captioner_of(cfg)
    loader = RewriterLoader.from_config(cfg)      # reads the prompt file here: a bad file fails before Spark work
    report = StageReport("rewrite")
    ensure_table(spark, tables)
    todo, counts = work(tables, captioner, r.rewriter_id, retry)
    for k, v in counts.items():
        report.count(k, v)
    n, n_slices = counts["to_rewrite"], max(1, math.ceil(counts["to_rewrite"] / r.commit_every))
    log.info("rewrite: %d of %d canonical rows to rewrite with %s (%s), captions of %s, in %d slice(s)",
             n, counts["canonical"], r.rewriter_id, loader.source.model_id(), captioner, n_slices)
    todo = todo.localCheckpoint(eager=True) if n else todo   # the slices of this run come from one snapshot
    outcome, progress, t0 = Counter(), Progress(n, label="rewrite", unit="rows", every_s=0), time.monotonic()
    for i in range(n_slices if n else 0):
        rows = todo.where(F.pmod(F.xxhash64("key"), F.lit(n_slices)) == F.lit(i))
        with SparkProgress(spark, f"rewrite slice {i + 1}/{n_slices}"):
            got = rewrite_slice(spark, tables, rows, n / n_slices, cfg, loader, captioner)
        outcome.update(got)
        progress.update(sum(got.values()), force=True)
        counts = outcome_counts(outcome)
        report.counts.update(counts)
        # A failure storm stops here, its rows committed as retryable error rows (see veclip.report).
        check_failure_rate(report, counts["failed"], sum(counts.values()), r.max_failure_rate,
                           final=i == n_slices - 1,
                           errors={k.split(":", 1)[1]: v for k, v in outcome.items() if k.startswith("failed:")})
    seconds = time.monotonic() - t0
    report.counts.update(outcome_counts(outcome))
    report.count("vecap_rows", count_rows(tables, r.rewriter_id, captioner))
    report.identity("canonical = no caption yet + done before + to rewrite", ["canonical"],
                    ["no_caption", "already_done", "to_rewrite"])
    report.identity("to rewrite = rewritten + fallback + failed", ["to_rewrite"], ["rewritten", "fallback", "failed"])
    report.identity("one VeCap row per captioned canonical row", ["already_done", "to_rewrite"], ["vecap_rows"])
    report.details.update({
        "rewriter": r.rewriter_id, "model": loader.source.model_id(), "revision": loader.source.revision_label(),
        "captioner": captioner, "prompt": f"{loader.spec.version} ({loader.spec.sha256[:12]}) {loader.spec.path}",
        "fallback reasons": dict(sorted((k.split(":", 1)[1], v) for k, v in outcome.items() if k.startswith("fallback:"))),
        "slices": n_slices, "rows_per_s": round(sum(outcome.values()) / seconds, 3) if seconds > 0 and n else 0.0,
        "vecap_version": tables.version("vecap")})
    return report.finish()
