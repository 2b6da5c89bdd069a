"""Candidate pairs from LSH buckets, with a cap on how many members of one bucket meet each other.

    pairs, over = bucket_pairs(entries, by=["table", "v"], fields=["phash", "new"], new="new", cap=200)
    pairs   # l_phash, l_new, r_phash, r_new: each unordered pair once per bucket, a new member on the left
    over    # n: the size of each bucket larger than the cap (for the report)

Both near-duplicate rules (pHash keys, MinHash bands) reduce to this: every entry is one member of
one bucket; two members of a bucket are a candidate pair. A bucket of n members would cost n^2/2
pairs, so buckets are never joined with themselves: members are collected per bucket, sorted by the
first of `fields`, and paired inside windows of `cap` members that start every `cap // 2`. A bucket
of at most `cap` members is one window (every pair); a larger one (a hub: thousands of product
titles sharing a band, a flood of near-identical banners) costs about 2 x cap pairs per member,
and pairs further apart than cap/2 in its sort order are not formed. Buckets whose members are all
old (already in silver) or that hold one member are dropped by counting, before any member is
collected: the work is one aggregation over the entries plus the pairs themselves.
"""

from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def _windows(n: Column, cap: int) -> Column:
    """Start offsets (0-based) of the windows over a sorted bucket of n members."""
    half = max(cap // 2, 1)
    last = F.ceil(F.greatest(n - cap, F.lit(0)) / half).cast("int") * half
    return F.sequence(F.lit(0), last, F.lit(half))


def bucket_pairs(entries: DataFrame, by: Sequence[str], fields: Sequence[str], new: str,
                 cap: int) -> tuple[DataFrame, DataFrame]:
    """(pairs, over_cap): candidate pairs of members sharing a bucket, and the oversized buckets.

    `entries` has one row per (bucket, member): the bucket columns `by` and the member columns
    `fields` (the first is the sort order inside a bucket; `new` is a boolean among them). Pairs have
    columns l_<field> and r_<field>; at least one side is new and the left side always is.
    """
    if cap < 2:
        raise ValueError(f"bucket cap must be >= 2, got {cap}")
    # Sizes first (a plain count, cheap to aggregate): nearly every bucket of a random hash holds one
    # member, and only the others are collected.
    sizes = (entries.groupBy(*by).agg(F.count(F.lit(1)).alias("n"), F.max(F.col(new)).alias("any_new"))
                    .where((F.col("n") >= 2) & F.col("any_new")).localCheckpoint(eager=False))
    over = sizes.where(F.col("n") > cap).select("n")
    member = F.struct(*[F.col(f) for f in fields])
    grouped = (entries.join(sizes.select(*by, "n"), list(by))
                      .groupBy(*by, "n").agg(F.array_sort(F.collect_list(member)).alias("m")))
    windows = grouped.select(F.explode(_windows(F.col("n"), cap)).alias("w"), "m").select(
        F.slice("m", F.col("w") + 1, cap).alias("c"))
    lefts = windows.select(F.posexplode("c").alias("i", "x"), "c")
    pairs = (lefts.select("i", "x", F.posexplode("c").alias("j", "y")).where(F.col("i") < F.col("j"))
                  .where(F.col(f"x.{new}") | F.col(f"y.{new}")))
    swap = ~F.col(f"x.{new}")
    out = [F.when(swap, F.col(f"y.{f}")).otherwise(F.col(f"x.{f}")).alias(f"l_{f}") for f in fields]
    out += [F.when(swap, F.col(f"x.{f}")).otherwise(F.col(f"y.{f}")).alias(f"r_{f}") for f in fields]
    return pairs.select(*out), over


def over_cap_counts(over: DataFrame) -> tuple[int, int]:
    """(buckets over the cap, members in them) of `bucket_pairs`' second result."""
    row = over.agg(F.count(F.lit(1)).alias("b"), F.sum("n").alias("m")).first()
    return int(row["b"] or 0), int(row["m"] or 0)
