"""Caption stage: canonical samples without a caption from the configured captioner -> `captions`.

    spark-submit jobs/caption.py --config conf/local.yaml --set caption.model=PATH [--retry-errors]
    report = run_caption(cfg, spark, retry_errors=False)

Reads `veclip.tables.canonical_samples` (bronze rows that dedupe kept), writes the `captions` Delta
table keyed by (key, captioner) with the columns of veclip.schemas.CAPTIONS: the cleaned caption, or
an `error` saying why there is none, plus model id/revision, rendered prompt and its hash, generation
parameters and timestamps.

Resumable and incremental, through veclip.model_stage (the driver shared with the rewrite stage):
the rows still missing a caption from this captioner (key and image) are computed once per run and
written once to a work table under the root, in slices of about `caption.commit_every` rows (by a
hash of the key); each slice reads only its own file, is captioned and MERGEd on its own. A slice
costs the same whatever the crawl size, a killed job loses at most one slice, and a rerun does only
what is missing. The MERGE on (key, captioner) never duplicates a pair; another captioner id
captions the same rows alongside. `--retry-errors` also recaptions rows that failed before and
overwrites their caption/error/provenance columns. A failure storm (more than
`caption.max_failure_rate` of this run's rows failing) raises `FailureRateExceeded` after the slice
that shows it: the job exits non-zero, and the failed rows stay error rows for `--retry-errors`.

Inference goes through veclip.inference.map_batches: the model loads once per Python worker, a
failing batch (CUDA out-of-memory included) is split and retried, a broken image marks only its row.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from veclip.caption.models import CaptionerInfo, CaptionerSpec, describe
from veclip.caption.predict import CaptionLoader
from veclip.caption.prompt import prompt_sha256
from veclip.config import Config
from veclip.config.caption import CaptionConfig
from veclip.imaging import DEFAULT_MAX_PIXELS
from veclip.inference import Load, arrow_rows_per_batch, map_batches
from veclip.model_stage import (OUTCOME, ModelStage, outcome_of, plan_tasks, run_slices, snapshot_todo,
                                task_profile, work_name)
from veclip.report import StageReport
from veclip.schemas import CAPTIONS
from veclip.tables import Tables, canonical_samples

log = logging.getLogger(__name__)

KEYS = ["key", "captioner"]
UPDATE = [c for c in CAPTIONS.fieldNames() if c not in KEYS]  # what --retry-errors overwrites
# Rows per Arrow batch sent to a Python worker: images are large, Spark's default is 10,000 rows.
ARROW_ROWS_PER_BATCH = 64


def spec_of(c: CaptionConfig) -> CaptionerSpec:
    return CaptionerSpec.from_config(c)


def caption_loader(c: CaptionConfig, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[CaptionLoader, CaptionerInfo]:
    """The worker-side loader and the driver-side facts recorded with every caption.

    `max_pixels` (ingest.max_pixels) bounds what a worker decodes: see veclip.imaging.
    """
    spec = spec_of(c)
    info = describe(spec)
    return CaptionLoader(spec, info.prompt_text, max_chars=c.max_chars, max_pixels=max_pixels), info


def todo(tables: Tables, canonical: DataFrame, captioner: str, retry_errors: bool) -> DataFrame:
    """Canonical rows with no row from `captioner` (or a failed one, when retrying errors): key, image."""
    where = f"captioner = '{captioner}'" + (" AND error IS NULL" if retry_errors else "")
    return tables.missing(canonical.select("key", "image"), "captions", ["key"], where=where)


def with_provenance(out: DataFrame, c: CaptionConfig, spec: CaptionerSpec, info: CaptionerInfo) -> DataFrame:
    """map_batches output (key, caption, error, started_at, finished_at) -> the CAPTIONS columns."""
    values = {
        "captioner": F.lit(c.captioner), "model_id": F.lit(c.model), "model_revision": F.lit(info.revision),
        "prompt": F.lit(info.prompt_text), "prompt_sha256": F.lit(prompt_sha256(info.prompt_text)),
        "generation_params": F.lit(spec.generation_params_json()),
    }
    return out.select(*[(values[f.name] if f.name in values else F.col(f.name)).cast(f.dataType).alias(f.name)
                        for f in CAPTIONS.fields])


def model_stage(spark: SparkSession, cfg: Config, load: Load, info: CaptionerInfo) -> ModelStage:
    """The caption stage as veclip.model_stage drives it: to-do rows (key, image) -> CAPTIONS rows."""
    c = cfg.caption
    cache_key = getattr(load, "cache_key", None) or f"caption:{c.captioner}"
    spec = spec_of(c)

    def generate(rows: DataFrame, expected: float) -> DataFrame:
        # One engine per task slot, also with vLLM: a small captioner's time goes to per-image preprocessing
        # in the engine's process, which two processes share out better than two threads of one
        # (benchmarks/engine_throughput.py); its calls are bounded by the predict (max_rows_per_call).
        plan = plan_tasks(spark, expected, c.batch_size, False, c.partitions, c.gpus_per_task)
        src = rows.select("key", "image").repartition(plan.partitions)
        out = map_batches(src, load, cache_key, c.batch_size, keep=["key"], output="caption",
                          profile=task_profile(spark, c.gpus_per_task, plan), cpu_threads=plan.cpu_threads)
        return with_provenance(out, c, spec, info).withColumn(OUTCOME, outcome_of(F.lit("captioned")))

    return ModelStage("caption", "captions", KEYS, UPDATE, ("captioned", "failed"), generate, unit="images")


def ensure_table(spark: SparkSession, tables: Tables) -> None:
    """Create the captions table empty, with exactly the CAPTIONS columns and types."""
    if not tables.exists("captions"):
        tables.merge("captions", spark.createDataFrame([], CAPTIONS), KEYS)


def status(tables: Tables, canonical: DataFrame, captioner: str) -> dict[str, int]:
    """One pass: canonical rows, those with a row from `captioner`, and those whose row is an error."""
    caps = (tables.read("captions").where(F.col("captioner") == captioner)
            .select("key", F.col("error").isNotNull().alias("failed")))
    row = (canonical.select("key").join(caps, "key", "left")
           .agg(F.count("*").alias("canonical"), F.count("failed").alias("rows"),
                F.count(F.when(F.col("failed"), 1)).alias("failed")).first())
    return {k: int(row[k] or 0) for k in ("canonical", "rows", "failed")}


def run_caption(cfg: Config, spark: SparkSession, *, retry_errors: bool = False,
                loader: Optional[Load] = None) -> StageReport:
    """Caption every canonical row that lacks a caption from `caption.captioner_id`; see the module doc.

    `loader` replaces the model loader built from the config (provenance still comes from the config).
    """
    c = cfg.caption
    retry = retry_errors
    report = StageReport("caption")
    tables = Tables(cfg, spark)
    built, info = caption_loader(c, cfg.ingest.max_pixels)
    ensure_table(spark, tables)
    canonical = canonical_samples(tables)
    before = status(tables, canonical, c.captioner)
    done = before["rows"] - (before["failed"] if retry else 0)
    report.count("canonical", before["canonical"])
    report.count("already_done", done)
    report.count("to_caption", before["canonical"] - done)
    t0 = time.monotonic()
    total = report.counts["to_caption"]
    snapshot = snapshot_todo(tables, todo(tables, canonical, c.captioner, retry), work_name("caption", c.captioner),
                             total, c.commit_every)
    log.info("caption: %d of %d canonical rows to caption with %s (%s) in %d slice(s)",
             total, before["canonical"], c.captioner, c.model, snapshot.n_slices)
    with arrow_rows_per_batch(spark, max(ARROW_ROWS_PER_BATCH, c.batch_size)):
        run_slices(spark, tables, snapshot, model_stage(spark, cfg, loader or built, info), report,
                   c.max_failure_rate)
    seconds = time.monotonic() - t0
    report.count("caption_rows", status(tables, canonical, c.captioner)["rows"])
    # The slices covered the work exactly once, and every canonical row now has its row.
    report.identity("to caption = captioned + failed", ["to_caption"], ["captioned", "failed"])
    report.identity("one caption row per canonical row", ["canonical"], ["caption_rows"])
    processed = report.counts["captioned"] + report.counts["failed"]
    report.details.update({
        "captioner": c.captioner, "model": c.model, "revision": info.revision, "prompt": info.prompt_text,
        "slices": snapshot.n_slices, "images_per_s": round(processed / seconds, 2) if processed else 0.0,
        "captions_version": tables.version("captions")})
    return report.finish()
