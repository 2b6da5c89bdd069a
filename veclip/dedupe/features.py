"""Per-row dedupe features as Spark pandas UDFs (vectorised over each Arrow batch).

    feats = image_features(bronze_rows, device="auto")   # + pixel_sha256, phash, hash_error
    feats = text_features(feats, extra_boilerplate)      # + alt_text_norm, alt_text_boilerplate, text_score
    bands = text_bands(rows, cfg.dedupe)                 # + text_bands array<bigint>
    pairs.withColumn("text_jaccard", jaccard_col("a_text", "b_text", 2))   # Spark SQL, no Python

The image UDF decodes each image once (PIL), hashes the canonical pixels and batches the pHash DCT
(numpy, or torch on the task's GPU). Its batch size is Arrow's records per batch, which the stage
sets from `dedupe.batch_size`. A row whose image does not decode gets `hash_error`, never a failed task.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, LongType

from veclip.config.dedupe import DedupeConfig
from veclip.dedupe import text as T
from veclip.devices import pick_device
from veclip.dedupe.pixels import hash_images

IMAGE_SCHEMA = "pixel_sha256 string, phash long, hash_error string"
TEXT_SCHEMA = "alt_text_norm string, alt_text_boilerplate boolean, text_score int"


def image_features(df: DataFrame, device: str = "auto") -> DataFrame:
    """Add pixel_sha256, phash, hash_error from the `image` column and drop the bytes."""

    @pandas_udf(IMAGE_SCHEMA)
    def hash_batch(images: pd.Series) -> pd.DataFrame:
        return hash_images(list(images), pick_device(device))

    return (df.withColumn("_h", hash_batch("image"))
              .select(*[c for c in df.columns if c != "image"], "_h.*"))


def text_row_features(alt_text: pd.Series, raw: pd.Series, extra: frozenset) -> pd.DataFrame:
    """The pure part of `text_features`, testable without Spark."""
    norms = [T.normalise(t) for t in alt_text]
    return pd.DataFrame({
        "alt_text_norm": norms,
        "alt_text_boilerplate": [T.is_boilerplate(n, r, extra) for n, r in zip(norms, raw)],
        "text_score": pd.array([T.text_score(n) for n in norms], dtype="Int32"),
    })


def text_features(df: DataFrame, extra_boilerplate: Iterable[str] = ()) -> DataFrame:
    """Add alt_text_norm, alt_text_boilerplate (by form or config list) and text_score."""
    extra = frozenset(n for n in (T.normalise(t) for t in extra_boilerplate) if n)

    @pandas_udf(TEXT_SCHEMA)
    def text_batch(alt_text: pd.Series, raw: pd.Series) -> pd.DataFrame:
        return text_row_features(alt_text, raw, extra)

    raw = F.col("alt_text_raw") if "alt_text_raw" in df.columns else F.lit(None).cast("string")
    return df.withColumn("_t", text_batch(F.col("alt_text"), raw)).select(*df.columns, "_t.*")


def band_rows(norms: pd.Series, cfg: DedupeConfig, chunk: int = 2048) -> pd.Series:
    """MinHash band keys per normalised text (a list of `minhash_bands` int64), computed in chunks."""
    out: list = []
    num_perm = cfg.minhash_bands * cfg.minhash_rows
    values = list(norms)
    for i in range(0, len(values), chunk):
        part = values[i:i + chunk]
        sig = T.minhash(part, cfg.text_shingle_words, num_perm, cfg.minhash_seed)
        out.extend(list(T.band_keys(sig, cfg.minhash_bands)))
    return pd.Series(out, dtype=object)


def text_bands(df: DataFrame, cfg: DedupeConfig) -> DataFrame:
    """Add `text_bands` (array<bigint>) from `alt_text_norm` (which must be non-empty)."""

    @pandas_udf(ArrayType(LongType()))
    def bands(norms: pd.Series) -> pd.Series:
        return band_rows(norms, cfg)

    return df.withColumn("text_bands", bands("alt_text_norm"))


def shingles_col(norm: Column, shingle_words: int) -> Column:
    """Distinct word shingles of a normalised-text column, in Spark SQL (as `text.shingles`)."""
    words = F.split(norm, " ")
    n = F.greatest(F.size(words) - shingle_words + 1, F.lit(1))
    grams = F.transform(F.sequence(F.lit(1), n), lambda i: F.array_join(F.slice(words, i, shingle_words), " "))
    return F.array_distinct(grams)


def jaccard_col(a: str, b: str, shingle_words: int) -> Column:
    """Exact shingle Jaccard of two normalised-text columns, in Spark SQL (as `text.jaccard`)."""
    sa, sb = shingles_col(F.col(a), shingle_words), shingles_col(F.col(b), shingle_words)
    return F.size(F.array_intersect(sa, sb)) / F.size(F.array_union(sa, sb))
