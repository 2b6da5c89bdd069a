"""AltText rules in Spark: low-information texts by counting, and near-duplicate text edges.

    frequent = shared_texts(rows, min_groups=3)            # alt_text_norm shared by >= 3 image groups
    edges = near_text_edges(rows, cfg.dedupe)               # a, b, rule, hamming, text_jaccard, a_node, b_node

`rows` are the candidate rows with key, is_new, node (the image group the row is in after the image
rules: an existing dup_group or a new component label), node_existing, alt_text_norm, low_info, phash.

How text combines with images: two samples merge on text only when (1) both AltTexts are
informative (not boilerplate, not shared by `boilerplate_min_groups` image groups), (2) their
normalised texts are equal or their word-shingle Jaccard is >= `text_min_jaccard`, found by MinHash
LSH banding, and (3) their images are within `text_image_max_hamming` pHash bits, looser than the
image rule. Text alone never merges: two different photos sold under one product title stay apart.
Equal normalised texts have equal MinHash signatures, so the banding join finds exact matches too.
"""

from __future__ import annotations


from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from veclip.config.dedupe import DedupeConfig
from veclip.dedupe.buckets import bucket_pairs
from veclip.dedupe.features import jaccard_col, text_bands
from veclip.dedupe.groups import hamming_col


def has_text(col: str = "alt_text_norm"):
    return F.col(col).isNotNull() & (F.length(col) > 0)


def shared_texts(rows: DataFrame, min_groups: int) -> DataFrame:
    """(alt_text_norm, image_groups) for texts on >= min_groups distinct image groups (a shop's name,
    "product photo"): such a text says nothing about which image it is on."""
    return (rows.where(has_text()).groupBy("alt_text_norm")
                .agg(F.countDistinct("node").alias("image_groups"))
                .where(F.col("image_groups") >= min_groups))


def _representatives(rows: DataFrame) -> DataFrame:
    """One row per (image group, text): the same text twice in one group adds no edge."""
    best = F.min(F.struct(F.col("is_new"), F.col("key"), F.col("phash")))
    return (rows.groupBy("node", "node_existing", "alt_text_norm")
                .agg(best.alias("r"), F.max("is_new").alias("has_new"))
                .select("node", "node_existing", "alt_text_norm", "has_new",
                        F.col("r.key").alias("key"), F.col("r.phash").alias("phash")))


TEXT_FIELDS = ["alt_text_norm", "key", "node", "node_existing", "phash", "has_new"]


def text_candidates(rows: DataFrame, cfg: DedupeConfig) -> tuple[DataFrame, DataFrame]:
    """Pairs of representatives in different image groups, at least one with a new row, that share a
    MinHash band: (l_*, r_*) columns, each pair once; and the bands over `bucket_cap` (column n).

    A band shared by thousands of near-identical product titles is paired only within sliding
    windows of `bucket_cap` texts in alphabetical order (veclip.dedupe.buckets): never a quadratic join."""
    eligible = rows.where(has_text() & ~F.col("low_info") & F.col("phash").isNotNull())
    reps = text_bands(_representatives(eligible), cfg).localCheckpoint(eager=False)   # MinHash once
    entries = reps.select(F.posexplode("text_bands").alias("band", "bkey"), *TEXT_FIELDS)
    pairs, over = bucket_pairs(entries, ["band", "bkey"], TEXT_FIELDS, "has_new", cfg.bucket_cap)
    return pairs.where(F.col("l_node") != F.col("r_node")).distinct(), over


def near_text_edges(candidates: DataFrame, cfg: DedupeConfig) -> DataFrame:
    """Candidates whose texts are similar enough and whose images are close enough (the looser pHash
    threshold): a, b, rule, hamming, text_jaccard, plus both image-group nodes for grouping."""
    close = candidates.withColumn("hamming", hamming_col(F.col("l_phash"), F.col("r_phash"))).where(
        F.col("hamming") <= cfg.text_image_max_hamming)
    scored = close.withColumn("text_jaccard", F.when(F.col("l_alt_text_norm") == F.col("r_alt_text_norm"),
                                                     F.lit(1.0))
                              .otherwise(jaccard_col("l_alt_text_norm", "r_alt_text_norm", cfg.text_shingle_words)))
    return scored.where(F.col("text_jaccard") >= cfg.text_min_jaccard).select(
        F.col("l_key").alias("a"), F.col("r_key").alias("b"), F.lit("near_text").alias("rule"),
        "hamming", "text_jaccard", F.col("l_node").alias("a_node"), F.col("l_node_existing").alias("a_existing"),
        F.col("r_node").alias("b_node"), F.col("r_node_existing").alias("b_existing"))
