"""Rewrite stage: canonical rows with a caption and no VeCap from the configured rewriter -> `vecap`.

    spark-submit jobs/rewrite.py --config conf/local.yaml --stages rewrite [--retry-errors]
    report = run_rewrite(cfg, spark, retry_errors=False)

Reads `veclip.tables.canonical_samples` (bronze `alt_text`) joined with the `captions` rows of the
fused captioner (`rewrite.captioner`, default `caption.captioner_id`) that have a caption and no error.
Writes the `vecap` Delta table keyed by (key, rewriter), exactly the columns of veclip.schemas.VECAP:
the VeCap, whether the documented fallback replaced the LLM output (`fallback_used`), model id and
revision, prompt version and hash, generation parameters, per-row error and timestamps.

Resumable, through veclip.model_stage (the driver shared with the caption stage): the rows still
missing (key, alt_text, caption and silver's `alt_text_low_info`, False without a silver table) are
computed once per run and written once to a work table under the root, in slices of about
`rewrite.commit_every` rows (by a hash of the key); each slice reads only its own file, is generated
and MERGEd on its own, so a kill loses at most one slice and a rerun does only what is missing. The
MERGE on (key, rewriter) never duplicates a pair. `--retry-errors` also redoes rows whose rewrite
failed and overwrites them. A failure storm (more than `rewrite.max_failure_rate` of this run's rows
failing) raises `FailureRateExceeded` after the slice that shows it: the job exits non-zero, the
failed rows stay error rows for `--retry-errors`. The result JSON may carry keys beyond `RESULT`'s
(e.g. candidates, chosen): they are ignored here.

Inference goes through veclip.inference.map_batches, like the captioner: the model loads once per
Python worker, batches are regrouped, a failing batch is split and retried.
"""

from __future__ import annotations

import hashlib
import logging
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, IntegerType, StringType, StructField, StructType

from veclip.config import Config
from veclip.engines import engine_version
from veclip.inference import map_batches
from veclip.model_stage import (OUTCOME, ModelStage, outcome_of, plan_tasks, run_slices, snapshot_todo,
                                task_profile, work_name)
from veclip.report import StageReport
from veclip.rewrite.rewriter import RewriterLoader
from veclip.schemas import VECAP
from veclip.tables import Tables, canonical_samples

log = logging.getLogger(__name__)

KEYS = ["key", "rewriter"]
UPDATE = [c for c in VECAP.fieldNames() if c not in KEYS]   # what --retry-errors overwrites
RESULT = StructType([StructField("vecap", StringType()), StructField("fallback_used", BooleanType()),
                     StructField("reason", StringType()), StructField("candidates", IntegerType()),
                     StructField("chosen", IntegerType()), StructField("alt_text_in_fallback", BooleanType())])
WITH_ALT_TEXT = "|alt_text"   # outcome label suffix: a fallback that kept AltText words


def captioner_of(cfg: Config) -> str:
    captioner = cfg.rewrite.captioner or getattr(cfg.caption, "captioner_id", None)
    if not captioner:
        raise ValueError("rewrite: no captioner to fuse: set caption.captioner_id or rewrite.captioner")
    return captioner


def work(tables: Tables, captioner: str, rewriter: str, retry_errors: bool) -> tuple[DataFrame, dict]:
    """(rows to rewrite: key, alt_text, caption, alt_text_low_info; counts) from one pass over canonical +
    captions + vecap. `alt_text_low_info`: dedupe's flag for a boilerplate or shared AltText (silver),
    False when there is no silver table yet."""
    canonical = canonical_samples(tables).select("key", "alt_text")
    if tables.exists("silver"):
        canonical = canonical.join(tables.read("silver").select("key", "alt_text_low_info"), "key", "left")
    else:
        canonical = canonical.withColumn("alt_text_low_info", F.lit(None).cast("boolean"))
    canonical = canonical.withColumn("alt_text_low_info", F.coalesce("alt_text_low_info", F.lit(False)))
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
    todo = (rows.where(F.col("caption").isNotNull() & F.col("_done").isNull())
            .select("key", "alt_text", "caption", "alt_text_low_info"))
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
        "generation_params": row_params(loader.params_json(batch_size=r.batch_size, dtype=r.dtype,
                                                           prompt_file=loader.spec.path)),
    }
    cols = [(values[f.name] if f.name in values else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in VECAP.fields]
    return parsed.select(*cols, F.col("_r.reason").alias("_reason"), F.col("_r.chosen").alias("_chosen"),
                         F.coalesce(F.col("_r.alt_text_in_fallback"), F.lit(False)).alias("_alt_text"))


def row_params(stage_params: str):
    """The row's generation_params: the stage's JSON plus how many candidates this row had and which
    one won (null: the fallback, or no model call)."""
    assert stage_params.endswith("}") and stage_params != "{}"
    return F.concat(F.lit(stage_params[:-1] + ', "candidates": '),
                    F.coalesce(F.col("_r.candidates"), F.lit(0)).cast("string"), F.lit(', "chosen": '),
                    F.coalesce(F.col("_r.chosen").cast("string"), F.lit("null")), F.lit("}"))


def cache_key(loader: RewriterLoader) -> str:
    """Workers keep one model per distinct loader (model, prompt, parameters)."""
    return f"rewriter:{hashlib.sha256(repr(loader).encode()).hexdigest()[:16]}"


def model_stage(spark: SparkSession, cfg: Config, loader: RewriterLoader, captioner: str) -> ModelStage:
    """The rewrite stage as veclip.model_stage drives it: to-do rows -> VECAP rows, each labelled
    rewritten, fallback:<reason> or failed:<error type>."""
    r = cfg.rewrite

    def generate(rows: DataFrame, expected: float) -> DataFrame:
        # vLLM on CPU: one engine with every core of the executor decodes faster than one per core.
        plan = plan_tasks(spark, expected, r.batch_size, r.engine == "vllm", r.partitions, r.gpus_per_task)
        out = map_batches(rows.repartition(plan.partitions), loader, cache_key(loader), r.batch_size, keep=["key"],
                          output="result", profile=task_profile(spark, r.gpus_per_task, plan),
                          cpu_threads=plan.cpu_threads)
        result = with_provenance(out, cfg, loader, captioner)
        fallback = F.concat(F.lit("fallback:"), F.coalesce("_reason", F.lit("None")),
                            F.when(F.col("_alt_text"), F.lit(WITH_ALT_TEXT)).otherwise(F.lit("")))
        won = F.concat(F.lit("rewritten:"), F.coalesce(F.col("_chosen").cast("string"), F.lit("0")))
        ok = F.when(F.col("fallback_used"), fallback).otherwise(won)
        return result.withColumn(OUTCOME, outcome_of(ok)).drop("_reason", "_chosen", "_alt_text")

    return ModelStage("rewrite", "vecap", KEYS, UPDATE, ("rewritten", "fallback", "failed"), generate)


def ensure_table(spark: SparkSession, tables: Tables) -> None:
    """Create the vecap table empty with exactly the VECAP schema (nullability included)."""
    if not tables.exists("vecap"):
        tables.merge("vecap", spark.createDataFrame([], VECAP), KEYS)


def labelled(outcome, kind: str) -> dict[str, int]:
    """Outcome counts of one kind by label: fallback reasons, or the index of the winning candidate."""
    got: dict[str, int] = {}
    for k, v in outcome.items():
        if k.startswith(f"{kind}:"):
            label = k.split(":", 1)[1].removesuffix(WITH_ALT_TEXT)
            got[label] = got.get(label, 0) + v
    return dict(sorted(got.items()))


def count_rows(tables: Tables, rewriter: str, captioner: str) -> int:
    """Canonical rows with a usable caption that have a VeCap row from `rewriter`."""
    return work(tables, captioner, rewriter, retry_errors=False)[1]["already_done"]


def run_rewrite(cfg: Config, spark: SparkSession, *, retry_errors: bool = False) -> StageReport:
    """Write a VeCap for every canonical captioned row that lacks one from `rewrite.rewriter_id`."""
    r = cfg.rewrite
    retry = retry_errors
    tables = Tables(cfg, spark)
    captioner = captioner_of(cfg)
    loader = RewriterLoader.from_config(cfg)      # reads the prompt file here: a bad file fails before Spark work
    report = StageReport("rewrite")
    ensure_table(spark, tables)
    todo, counts = work(tables, captioner, r.rewriter_id, retry)
    for k, v in counts.items():
        report.count(k, v)
    n, t0 = counts["to_rewrite"], time.monotonic()
    snapshot = snapshot_todo(tables, todo, work_name("rewrite", r.rewriter_id), n, r.commit_every)
    log.info("rewrite: %d of %d canonical rows to rewrite with %s (%s), captions of %s, in %d slice(s)",
             n, counts["canonical"], r.rewriter_id, loader.source.model_id(), captioner, snapshot.n_slices)
    outcome = run_slices(spark, tables, snapshot, model_stage(spark, cfg, loader, captioner), report,
                         r.max_failure_rate)
    seconds = time.monotonic() - t0
    report.count("fallback_with_alt_text", sum(v for k, v in outcome.items()
                                               if k.startswith("fallback:") and k.endswith(WITH_ALT_TEXT)))
    report.count("vecap_rows", count_rows(tables, r.rewriter_id, captioner))
    report.identity("canonical = no caption yet + done before + to rewrite", ["canonical"],
                    ["no_caption", "already_done", "to_rewrite"])
    report.identity("to rewrite = rewritten + fallback + failed", ["to_rewrite"], ["rewritten", "fallback", "failed"])
    report.identity("one VeCap row per captioned canonical row", ["already_done", "to_rewrite"], ["vecap_rows"])
    report.details.update({
        "rewriter": r.rewriter_id, "model": loader.source.model_id(), "revision": loader.source.revision_label(),
        "captioner": captioner, "prompt": f"{loader.spec.version} ({loader.spec.sha256[:12]}) {loader.spec.path}",
        "fallback reasons": labelled(outcome, "fallback"), "winning candidate": labelled(outcome, "rewritten"),
        "num_candidates": r.num_candidates, "engine": f"{r.engine} ({engine_version(r.engine)})",
        "slices": max(1, snapshot.n_slices), "rows_per_s": round(sum(outcome.values()) / seconds, 3) if seconds > 0 and n else 0.0,
        "vecap_version": tables.version("vecap")})
    return report.finish()
