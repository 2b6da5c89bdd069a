"""The columns of every table, in one place: the contract between stages.

A stage writes exactly its table's columns; the next stage may rely on them. Keys:
bronze/silver `key`; quarantine (`key`, `stage`); captions (`key`, `captioner`);
vecap (`key`, `rewriter`); gold `key`.
"""

from pyspark.sql.types import (BinaryType, BooleanType, DoubleType, IntegerType, LongType, StringType,
                               StructField, StructType, TimestampType)


def _schema(*fields: tuple) -> StructType:
    return StructType([StructField(name, typ, nullable) for name, typ, nullable in fields])


# One row per accepted sample. `key` is stable: the same sample read again gets the same key.
BRONZE = _schema(
    ("key", StringType(), False),          # stable sample id (hex), see veclip.ingest.sample_key
    ("url", StringType(), True),           # where the image came from, when known
    ("image", BinaryType(), False),        # original bytes, as crawled
    ("image_sha256", StringType(), False),  # hex sha256 of `image`
    ("width", IntegerType(), False),       # decoded size, after EXIF orientation is NOT applied
    ("height", IntegerType(), False),
    ("image_format", StringType(), False),  # PIL format: JPEG, PNG, WEBP, GIF, ...
    ("image_mode", StringType(), False),   # PIL mode: RGB, RGBA, CMYK, L, P, I;16, ...
    ("alt_text_raw", StringType(), True),  # exactly as crawled
    ("alt_text", StringType(), True),      # cleaned: no HTML, normalised Unicode/whitespace, bounded
    ("source", StringType(), False),       # input file (shard) path
    ("source_key", StringType(), True),    # the sample's id inside its source (img2dataset key, row index)
    ("source_format", StringType(), False),  # webdataset | parquet | url_table | vecap_json
    ("ingested_at", TimestampType(), False),
)

# One row per rejected sample, with a machine-readable reason.
QUARANTINE = _schema(
    ("key", StringType(), False),
    ("stage", StringType(), False),        # ingest | dedupe | caption | rewrite | gold
    ("reason", StringType(), False),       # e.g. zero_bytes, truncated, not_an_image, too_small, http_404
    ("detail", StringType(), True),        # human-readable detail
    ("url", StringType(), True),
    ("alt_text_raw", StringType(), True),
    ("source", StringType(), True),
    ("source_key", StringType(), True),
    ("quarantined_at", TimestampType(), False),
)

CAPTIONS = _schema(
    ("key", StringType(), False),
    ("captioner", StringType(), False),    # captioner id from config (e.g. llava-1.5-7b)
    ("caption", StringType(), True),       # null when `error` is set
    ("model_id", StringType(), False),
    ("model_revision", StringType(), True),
    ("prompt", StringType(), True),
    ("prompt_sha256", StringType(), True),
    ("generation_params", StringType(), False),  # JSON
    ("error", StringType(), True),         # null when fine
    ("started_at", TimestampType(), False),
    ("finished_at", TimestampType(), False),
)

VECAP = _schema(
    ("key", StringType(), False),
    ("rewriter", StringType(), False),     # rewriter id from config
    ("captioner", StringType(), False),    # which caption it fused
    ("vecap", StringType(), True),
    ("fallback_used", BooleanType(), False),
    ("model_id", StringType(), False),
    ("model_revision", StringType(), True),
    ("prompt_version", StringType(), True),
    ("prompt_sha256", StringType(), True),
    ("generation_params", StringType(), False),  # JSON
    ("error", StringType(), True),
    ("started_at", TimestampType(), False),
    ("finished_at", TimestampType(), False),
)

# The training table: plain Parquet files under Delta (no deletion vectors), streamed by petastorm.
GOLD = _schema(
    ("key", StringType(), False),
    ("image", BinaryType(), False),        # JPEG, shorter side at most gold.image_size
    ("alt_text", StringType(), True),
    ("caption", StringType(), True),
    ("vecap", StringType(), True),
    ("captioner", StringType(), True),
    ("rewriter", StringType(), True),
    ("silver_version", LongType(), True),
    ("captions_version", LongType(), True),
    ("vecap_version", LongType(), True),
)

# One row per bronze row (no image bytes: join bronze on `key`). Downstream reads `is_canonical` rows.
SILVER = _schema(
    ("key", StringType(), False),
    ("dup_group", StringType(), False),     # the group's canonical key (its own key when kept)
    ("is_canonical", BooleanType(), False),  # the one sample of its group that later stages use
    ("dup_rule", StringType(), True),       # null when canonical or unreadable; exact_bytes | exact_pixels |
                                            # near_image | near_text (the rule of `duplicate_of`'s match)
    ("duplicate_of", StringType(), True),   # the sample it matched (in the same group); null when canonical
    ("image_sha256", StringType(), False),  # hex sha256 of the bytes (from bronze)
    ("pixel_sha256", StringType(), True),   # hex sha256 of the decoded pixels; null when undecodable
    ("phash", LongType(), True),            # 64-bit DCT pHash; null when undecodable or flat
    ("width", IntegerType(), False),
    ("height", IntegerType(), False),
    ("alt_text_norm", StringType(), True),  # normalised AltText (what text matching compares)
    ("alt_text_low_info", BooleanType(), False),  # boilerplate or shared by unrelated images
    ("hash_error", StringType(), True),     # why the image could not be hashed (row also in quarantine)
    ("deduped_at", TimestampType(), False),
)

# One row per dropped (non-canonical) sample: what it duplicates, by which rule, with the evidence.
DEDUPE_AUDIT = _schema(
    ("key", StringType(), False),
    ("duplicate_of", StringType(), False),
    ("dup_rule", StringType(), False),
    ("dup_group", StringType(), False),     # = the kept sample's key
    ("hamming", IntegerType(), True),       # pHash distance to duplicate_of (null when a pHash is null:
                                            # flat images match only exactly)
    ("text_jaccard", DoubleType(), True),   # AltText similarity, for near_text
    ("decided_at", TimestampType(), False),
)
