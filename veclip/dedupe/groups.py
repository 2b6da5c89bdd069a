"""Duplicate edges and groups, in Spark: exact-hash stars, pHash block index (multi-index hashing), connected components.

    edges = exact_edges(new, rows, "pixel_sha256", "exact_pixels")
    cand, over = image_candidates(new, rows, cfg.dedupe)        # block index: never an all-pairs join
    edges = near_image_edges(new, cand, cfg.dedupe.phash_max_hamming)
    labels = connected_components(edges.select("a", "b"), max_iterations=40)

Edges have columns a (a new row's key), b (the other row's key), rule, hamming, text_jaccard. `rows`
is every row that can be matched (new and already in silver) with `is_new`; `new` is the new rows.

- Exact rules link each row to one hub per hash value (an existing row if there is one, else the
  smallest key): linear in the rows however many copies share a hash.
- Near images (`phash_index: blocks`, multi-index hashing): each distinct pHash is cut into
  `phash_blocks` blocks; there is one index table per choice of `phash_key_blocks` of them, keyed by
  the hash's bits in those blocks. Hashes sharing a key are candidates (veclip.dedupe.buckets, with
  its cap on hub buckets); candidates are kept at Hamming distance <= the threshold. Two hashes
  within phash_blocks - phash_key_blocks bits always share a key (pigeonhole: at most that many
  blocks differ); further ones share one when their differing bits fall in few blocks. With the
  default 8 blocks and keys of 4 (70 tables of 32-bit keys), an unrelated pair shares a key with
  probability 70 / 2^32 = 1.6e-8: candidates per row grow by 0.16 per 10^7 rows, not with the square.
  `phash_index: exhaustive` compares every new hash with every hash (exact at any distance, quadratic);
  `auto` (the default) does that while it costs at most `exhaustive_max_pairs` comparisons.
- Connected components: min-label propagation with pointer jumping, each round a Spark job, until no
  label changes (rounds grow with log of the longest chain), checkpointed each round.
"""

from __future__ import annotations

import itertools
import logging
from typing import Optional

import numpy as np

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from veclip.config.dedupe import DedupeConfig
from veclip.dedupe.buckets import bucket_pairs

log = logging.getLogger(__name__)

EDGE_COLUMNS = ["a", "b", "rule", "hamming", "text_jaccard"]


def hamming_col(x: Column, y: Column) -> Column:
    """Bits that differ between two int64 pHash columns (null when either is null)."""
    return F.bit_count(x.bitwiseXOR(y)).cast("int")


def hubs(rows: DataFrame, col: str) -> DataFrame:
    """One hub per value of `col`: an existing row when there is one (is_new false sorts first), else
    the smallest key. Returns (col, hub, hub_phash, has_new: a new row has this value)."""
    best = F.min(F.struct(F.col("is_new"), F.col("key"), F.col("phash")))
    return (rows.where(F.col(col).isNotNull()).groupBy(col).agg(best.alias("h"), F.max("is_new").alias("has_new"))
                .select(col, F.col("h.key").alias("hub"), F.col("h.phash").alias("hub_phash"), "has_new"))


def exact_edges(new: DataFrame, rows: DataFrame, col: str, rule: str) -> DataFrame:
    """Each new row to its value's hub (skipping itself)."""
    return (new.where(F.col(col).isNotNull()).join(hubs(rows, col), on=col)
               .where(F.col("key") != F.col("hub"))
               .select(F.col("key").alias("a"), F.col("hub").alias("b"), F.lit(rule).alias("rule"),
                       hamming_col(F.col("phash"), F.col("hub_phash")).alias("hamming"),
                       F.lit(None).cast("double").alias("text_jaccard")))


def block_widths(bits: int, blocks: int) -> list[int]:
    """Split `bits` into `blocks` near-equal widths (the first ones one bit wider)."""
    base, extra = divmod(bits, blocks)
    return [base + (1 if i < extra else 0) for i in range(blocks)]


def block_masks(blocks: int) -> list[int]:
    """The bit mask of each block of a 64-bit hash, lowest bits first."""
    out, offset = [], 0
    for w in block_widths(64, blocks):
        out.append(((1 << w) - 1) << offset)
        offset += w
    return out


def key_masks(blocks: int, key_blocks: int) -> list[int]:
    """One mask per index table: the union of `key_blocks` of the `blocks` blocks, every combination."""
    masks = block_masks(blocks)
    return [sum(masks[i] for i in combo) for combo in itertools.combinations(range(blocks), key_blocks)]


def shares_key(a: np.ndarray, b: np.ndarray, blocks: int, key_blocks: int) -> np.ndarray:
    """True where two int64 pHashes land in one bucket of the block index: >= key_blocks equal blocks.

    The numpy twin of the Spark index, for benchmarks and tests."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)).view(np.uint64)
    equal = np.zeros(x.shape, dtype=np.int64)
    for m in block_masks(blocks):
        equal += (x & np.uint64(m)) == 0
    return equal >= key_blocks


def _signed(mask: int) -> int:
    """A 64-bit mask as the signed long Spark literals need."""
    return mask - (1 << 64) if mask >= 1 << 63 else mask


def index_keys(phash: Column, masks: list[int]) -> Column:
    """array<struct<table int, v bigint>>: the hash's bits under each table's mask."""
    return F.array(*[F.struct(F.lit(t).alias("table"), phash.bitwiseAND(F.lit(_signed(m))).alias("v"))
                     for t, m in enumerate(masks)])


def choose_index(new: DataFrame, rows: DataFrame, cfg: DedupeConfig) -> tuple[str, str]:
    """(index, why): `phash_index`, with auto resolved by counting the comparisons an exhaustive search needs."""
    if cfg.phash_index != "auto":
        return cfg.phash_index, "set in config"
    n_new = new.where(F.col("phash").isNotNull()).select("phash").distinct().count()
    n_all = rows.where(F.col("phash").isNotNull()).select("phash").distinct().count()
    index = "exhaustive" if n_new * n_all <= cfg.exhaustive_max_pairs else "blocks"
    return index, f"auto: {n_new:,} new x {n_all:,} distinct hashes (exhaustive up to {cfg.exhaustive_max_pairs:,})"


def image_candidates(new: DataFrame, rows: DataFrame, cfg: DedupeConfig,
                     index: str = "blocks") -> tuple[DataFrame, Optional[DataFrame]]:
    """Distinct pHash pairs (p of a new row, q of any row, p = q included): (p, q, q_hub, hamming), and
    the buckets over `bucket_cap` (column n; None for the exhaustive index).

    blocks: the hash is cut into `phash_blocks` blocks; one table per choice of `phash_key_blocks` of
    them; two hashes are candidates when they agree on every block of some table. exhaustive: every
    new hash against every hash (all pairs; small crawls only).
    """
    hub = hubs(rows.where(F.col("phash").isNotNull()), "phash")
    if index == "exhaustive":
        left = new.where(F.col("phash").isNotNull()).select(F.col("phash").alias("p")).distinct()
        pairs = left.crossJoin(hub.select(F.col("phash").alias("q"), F.col("hub").alias("q_hub")))
        return pairs.withColumn("hamming", hamming_col(F.col("p"), F.col("q"))), None
    if index != "blocks":
        raise ValueError(f"unknown pHash index {index!r} (blocks or exhaustive)")
    masks = key_masks(cfg.phash_blocks, cfg.phash_key_blocks)
    hub = hub.localCheckpoint(eager=False)          # read three times: bucket sizes, members, hubs
    entries = (hub.select("phash", F.col("has_new").alias("new"),
                          F.explode(index_keys(F.col("phash"), masks)).alias("k"))
                  .select(F.xxhash64("k.table", "k.v").alias("bucket"), "phash", "new"))
    # One aggregation over the entries finds the buckets of 2+ hashes. A bucket of exactly two (nearly
    # all of them) is its own pair: min and max of its hashes, the new one on the left. Only larger
    # buckets are collected and paired by `bucket_pairs` (sliding windows above the cap).
    sizes = (entries.groupBy("bucket")
                    .agg(F.count(F.lit(1)).alias("n"), F.max("new").alias("any_new"), F.min("phash").alias("lo"),
                         F.max("phash").alias("hi"), F.max(F.when(F.col("new"), F.col("phash"))).alias("new_p"))
                    .where((F.col("n") >= 2) & F.col("any_new")).localCheckpoint(eager=False))
    twos = sizes.where(F.col("n") == 2).select(
        F.col("new_p").alias("p"), F.when(F.col("new_p") == F.col("hi"), F.col("lo")).otherwise(F.col("hi")).alias("q"))
    larger = entries.join(sizes.where(F.col("n") > 2).select("bucket"), "bucket", "left_semi")
    found, over = bucket_pairs(larger, ["bucket"], ["phash", "new"], "new", cfg.bucket_cap)
    selves = hub.where("has_new").select(F.col("phash").alias("p"), F.col("phash").alias("q"))
    pairs = (found.select(F.col("l_phash").alias("p"), F.col("r_phash").alias("q"))
                  .union(twos).union(selves).distinct())
    pairs = pairs.join(hub.select(F.col("phash").alias("q"), F.col("hub").alias("q_hub")), "q")
    return pairs.select("p", "q", "q_hub", hamming_col(F.col("p"), F.col("q")).alias("hamming")), over


def near_image_edges(new: DataFrame, candidates: DataFrame, max_hamming: int) -> DataFrame:
    """Each new row to the hub of every pHash within `max_hamming` bits of its own."""
    close = candidates.where(F.col("hamming") <= max_hamming)
    return (new.where(F.col("phash").isNotNull()).join(close, new["phash"] == close["p"])
               .where(F.col("key") != F.col("q_hub"))
               .select(F.col("key").alias("a"), F.col("q_hub").alias("b"), F.lit("near_image").alias("rule"),
                       F.col("hamming"), F.lit(None).cast("double").alias("text_jaccard")))


def connected_components(edges: DataFrame, max_iterations: int, what: str = "groups") -> DataFrame:
    """(a, b) undirected edges -> (node, label): label = the smallest node id of its component.

    Raises RuntimeError naming the stage and the rounds when it has not converged.
    """
    e = edges.select(F.col("a").alias("src"), F.col("b").alias("dst")).where(F.col("src") != F.col("dst"))
    e = e.union(e.select(F.col("dst").alias("src"), F.col("src").alias("dst"))).distinct()
    e = e.localCheckpoint(eager=False)
    if e.isEmpty():
        return e.select(F.col("src").alias("node"), F.col("dst").alias("label"))
    labels = (e.groupBy("src").agg(F.min("dst").alias("m"))
               .select(F.col("src").alias("node"), F.least("src", "m").alias("label")).localCheckpoint(eager=False))
    for rnd in range(1, max_iterations + 1):
        nb = (e.join(labels.select(F.col("node").alias("dst"), F.col("label").alias("l")), on="dst")
               .groupBy("src").agg(F.min("l").alias("nl")).withColumnRenamed("src", "node"))
        step = (labels.join(nb, "node", "left")
                .select("node", F.col("label").alias("old"), F.least("label", F.coalesce("nl", "label")).alias("label")))
        # Pointer jumping: take the label of one's label, so chains shrink by half each round.
        jump = step.alias("x").join(step.alias("y"), F.col("x.label") == F.col("y.node"), "left")
        new = jump.select(F.col("x.node").alias("node"), F.col("x.old").alias("old"),
                          F.least(F.col("x.label"), F.coalesce(F.col("y.label"), F.col("x.label"))).alias("label")
                          ).localCheckpoint(eager=False)
        n_changed = new.where(F.col("label") != F.col("old")).count()
        labels = new.select("node", "label")
        log.info("dedupe: connected components of %s, round %d: %d labels changed", what, rnd, n_changed)
        if n_changed == 0:
            return labels
    raise RuntimeError(f"dedupe: connected components of {what} did not converge in {max_iterations} rounds "
                       "(raise dedupe.max_iterations)")


def attach(edges: DataFrame, max_iterations: int, what: str) -> DataFrame:
    """Group new nodes, then attach each group to an existing group it touches.

    `edges` has a (a new node), b, b_group (b's existing group, null when b is new). New nodes are
    grouped by the connected components of new-new edges only: existing groups are never merged
    and never bridge two new groups. A new component that touches existing groups joins the
    smallest of them. Returns (node, label, group) for every new node in an edge; group is null
    when the component touches no existing group.
    """
    new_new = edges.where(F.col("b_group").isNull()).select("a", "b")
    labels = connected_components(new_new, max_iterations, what)
    nodes = edges.select(F.col("a").alias("node")).union(
        edges.where(F.col("b_group").isNull()).select(F.col("b").alias("node"))).distinct()
    nodes = (nodes.join(labels, "node", "left")
                  .select("node", F.coalesce("label", "node").alias("label")))
    touched = (edges.where(F.col("b_group").isNotNull()).join(nodes, edges["a"] == nodes["node"])
                    .groupBy("label").agg(F.min("b_group").alias("group")))
    return nodes.join(touched, "label", "left").select("node", "label", "group")
