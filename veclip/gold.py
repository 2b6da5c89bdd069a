"""Gold: the training table — canonical samples with their AltText, caption and VeCap.

    report = run_gold(cfg, spark)     # or: spark-submit jobs/rewrite.py --stages gold

Reads canonical rows (bronze + silver), the configured captioner's captions and the configured
rewriter's VeCaps (error-free rows only), re-encodes each image once as a JPEG whose shorter side is
at most `gold.image_size` (never enlarged), and overwrites the `gold` Delta table. Deletion vectors are off, so every
version is a plain set of Parquet files that petastorm can stream directly; earlier versions stay
readable for training runs pinned to them. The versions of the input tables are recorded on every
row. A rebuild is skipped when the inputs have not changed since the last one.
Rows whose image cannot be re-encoded, or that have no text at all, go to quarantine (stage `gold`).
"""

from __future__ import annotations

import io
from typing import Iterator, Optional

import pandas as pd
from PIL import Image
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from veclip import schemas
from veclip.config import Config
from veclip.imaging import DEFAULT_MAX_PIXELS, load_rgb, set_pixel_limit
from veclip.report import StageReport
from veclip.tables import Tables, canonical_samples


def bound_jpeg(data: bytes, short_side: int, quality: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Decode (veclip.imaging.load_rgb: bounded memory, EXIF orientation, 16-bit grey scaled,
    transparency on white), shrink the shorter side to `short_side`, encode as JPEG."""
    im = load_rgb(data, short_side, max_pixels)
    w, h = im.size
    scale = short_side / min(w, h)
    if scale < 1:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _reencode(short_side: int, quality: int, max_pixels: int = DEFAULT_MAX_PIXELS):
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        set_pixel_limit(max_pixels)  # in the worker process that decodes
        for pdf in frames:
            images, errors = [], []
            for data in pdf["image"]:
                try:
                    images.append(bound_jpeg(data, short_side, quality, max_pixels))
                    errors.append(None)
                except Exception as e:  # noqa: BLE001 - recorded per row, sent to quarantine
                    images.append(None)
                    errors.append(f"{type(e).__name__}: {e}"[:500])
            pdf = pdf.assign(image=images, gold_error=errors)
            yield pdf
    return run


def input_versions(tables: Tables) -> dict[str, Optional[int]]:
    return {name: tables.version(name) if tables.exists(name) else None
            for name in ("bronze", "silver", "captions", "vecap")}


def _last_build(tables: Tables) -> Optional[dict]:
    if not tables.exists("gold"):
        return None
    return tables.properties("gold")


def _joined(cfg: Config, tables: Tables) -> DataFrame:
    captioner, rewriter = cfg.caption.captioner_id, cfg.rewrite.rewriter_id
    samples = canonical_samples(tables).select("key", "image", "alt_text")
    caps = (tables.read("captions").where(F.col("captioner") == captioner).where("error IS NULL")
            .select("key", "caption", F.col("captioner")))
    df = samples.join(caps, "key", "left")
    if tables.exists("vecap"):
        vecaps = (tables.read("vecap").where(F.col("rewriter") == rewriter).where("error IS NULL")
                  .select("key", "vecap", F.col("rewriter")))
        df = df.join(vecaps, "key", "left")
    else:
        df = df.withColumn("vecap", F.lit(None).cast("string")).withColumn("rewriter", F.lit(None).cast("string"))
    if cfg.gold.require_vecap:
        df = df.where("vecap IS NOT NULL")
    return df


def run_gold(cfg: Config, spark: SparkSession) -> StageReport:
    tables = Tables(cfg, spark)
    report = StageReport("gold")
    versions = input_versions(tables)
    stamp = ",".join(f"{k}={v}" for k, v in versions.items()) + \
        f",captioner={cfg.caption.captioner_id},rewriter={cfg.rewrite.rewriter_id}," \
        f"size={cfg.gold.image_size},q={cfg.gold.jpeg_quality},require_vecap={cfg.gold.require_vecap},files={cfg.gold.files}"
    last = _last_build(tables)
    if last is not None and last.get("veclip.inputs") == stamp:
        report.count("rows", tables.read("gold").count())
        report.details["skipped"] = f"inputs unchanged since gold version {tables.version('gold')}"
        return report.finish()

    df = _joined(cfg, tables)
    # A new StructType: `df.schema.add` would change the DataFrame's own cached schema in place.
    out_schema = StructType(df.schema.fields + [StructField("gold_error", StringType(), True)])
    done = df.mapInPandas(_reencode(cfg.gold.image_size, cfg.gold.jpeg_quality, cfg.ingest.max_pixels),
                          out_schema).cache()
    bad = done.where("gold_error IS NOT NULL OR (alt_text IS NULL AND vecap IS NULL)")
    good = done.where("gold_error IS NULL AND (alt_text IS NOT NULL OR vecap IS NOT NULL)")
    gold = good.select(
        "key", "image", "alt_text", "caption", "vecap", "captioner", "rewriter",
        F.lit(versions["silver"]).cast("long").alias("silver_version"),
        F.lit(versions["captions"]).cast("long").alias("captions_version"),
        F.lit(versions["vecap"]).cast("long").alias("vecap_version"))
    gold = gold.repartition(cfg.gold.files, "key")
    tables.overwrite("gold", gold, {"delta.enableDeletionVectors": "false"})
    tables.set_properties("gold", {"delta.enableDeletionVectors": "false", "veclip.inputs": stamp})
    _quarantine(tables, bad)
    report.count("canonical", done.count())
    report.count("rows", tables.read("gold").count())
    report.count("quarantined", bad.count())
    report.count("with_vecap", tables.read("gold").where("vecap IS NOT NULL").count())
    report.identity("canonical = gold + quarantined", ["canonical"], ["rows", "quarantined"])
    report.details["gold_version"] = tables.version("gold")
    done.unpersist()
    return report.finish()


def _quarantine(tables: Tables, bad: DataFrame) -> None:
    rows = bad.select(
        "key", F.lit("gold").alias("stage"),
        F.when(F.col("gold_error").isNotNull(), F.lit("reencode_failed")).otherwise(F.lit("no_text")).alias("reason"),
        F.col("gold_error").alias("detail"), F.lit(None).cast("string").alias("url"),
        F.lit(None).cast("string").alias("alt_text_raw"), F.lit(None).cast("string").alias("source"),
        F.lit(None).cast("string").alias("source_key"), F.current_timestamp().alias("quarantined_at"))
    tables.merge("quarantine", rows, ["key", "stage"], update=["reason", "detail", "quarantined_at"])
