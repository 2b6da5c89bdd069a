"""Which sample of a duplicate group is kept, and which match explains each dropped one.

Keep policy (deterministic, so reruns choose the same canonical sample), among a new group's
readable rows:
  1. the most pixels (width * height): the best copy for captioning and training;
  2. the more informative AltText: not low-information first, then more distinct words;
  3. the smallest key.
Once a sample is canonical in silver it stays canonical: a later, larger copy joins its group as a
duplicate (captions already made for the kept sample stay valid). A new row whose images match an
existing group joins that group, with the group's id (= the kept sample's key).

Explaining a dropped sample (`duplicate_of`, `dup_rule`): among its matches inside its own group,
the strongest rule (exact_bytes > exact_pixels > near_image > near_text), then the smallest pHash
distance, then the highest text similarity, then a match to the kept sample, then the smallest key.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

RULES = ("exact_bytes", "exact_pixels", "near_image", "near_text")


def rule_rank():
    """0 for the strongest rule; a Spark expression over column `rule`."""
    expr = F.lit(len(RULES))
    for i, r in reversed(list(enumerate(RULES))):
        expr = F.when(F.col("rule") == r, F.lit(i)).otherwise(expr)
    return expr


def keep_order():
    """Sort order of the keep policy: the first row of a group is kept."""
    return [(F.col("width").cast("long") * F.col("height")).desc(), F.col("alt_text_low_info").asc(),
            F.col("text_score").desc_nulls_last(), F.col("key").asc()]


def choose_canonical(rows: DataFrame, unit: str = "unit") -> DataFrame:
    """Add `is_canonical` (the first row of each `unit` by the keep policy) and `dup_group` (its key)."""
    w = Window.partitionBy(unit).orderBy(*keep_order())
    ranked = rows.withColumn("_rank", F.row_number().over(w))
    first = F.first(F.when(F.col("_rank") == 1, F.col("key")), ignorenulls=True).over(Window.partitionBy(unit))
    return ranked.withColumn("is_canonical", F.col("_rank") == 1).withColumn("dup_group", first).drop("_rank")


def explain_duplicates(dups: DataFrame, edges: DataFrame, group_of: DataFrame) -> DataFrame:
    """For each dropped row (key, dup_group), its best match inside its group.

    `edges`: a, b, rule, hamming, text_jaccard (either direction); `group_of`: key, group, canonical
    for every row that can be matched. Returns key, duplicate_of, dup_rule, hamming, text_jaccard.
    """
    both = edges.select("a", "b", "rule", "hamming", "text_jaccard").union(
        edges.select(F.col("b").alias("a"), F.col("a").alias("b"), "rule", "hamming", "text_jaccard"))
    other = group_of.select(F.col("key").alias("b"), F.col("group").alias("b_group"),
                            F.col("canonical").alias("b_canonical"))
    cand = (dups.select(F.col("key").alias("a"), "dup_group").join(both, "a").join(other, "b")
                .where(F.col("b_group") == F.col("dup_group")))
    w = Window.partitionBy("a").orderBy(rule_rank().asc(), F.col("hamming").asc_nulls_last(),
                                        F.col("text_jaccard").desc_nulls_last(), F.col("b_canonical").desc(),
                                        F.col("b").asc())
    best = cand.withColumn("_r", F.row_number().over(w)).where(F.col("_r") == 1)
    return best.select(F.col("a").alias("key"), F.col("b").alias("duplicate_of"), F.col("rule").alias("dup_rule"),
                       "hamming", "text_jaccard")
