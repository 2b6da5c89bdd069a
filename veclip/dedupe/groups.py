"""Duplicate edges and groups, in Spark: exact-hash stars, pHash LSH banding, connected components.

    edges = exact_edges(new, rows, "pixel_sha256", "exact_pixels")
    edges = near_image_edges(new, rows, cfg.dedupe)             # never an all-pairs join
    labels = connected_components(edges.select("a", "b"), max_iterations=40)

Edges have columns a (a new row's key), b (the other row's key), rule, hamming, text_jaccard. `rows`
is every row that can be matched (new and already in silver) with `is_new`; `new` is the new rows.

- Exact rules link each row to one hub per hash value (an existing row if there is one, else the
  smallest key): linear in the rows however many copies share a hash.
- Near images: each distinct pHash of a new row is cut into `phash_bands` bands; each band is probed
  with every flip of up to `phash_probe_radius` bits and joined on (band, value) with the bands of
  every distinct pHash. Two hashes within bands*(radius+1)-1 bits always share a probed band
  (pigeonhole); candidates are then kept when their Hamming distance is within the threshold.
- Connected components: min-label propagation with pointer jumping, each round a Spark job, until no
  label changes (rounds grow with log of the longest chain), checkpointed each round.
"""

from __future__ import annotations

import itertools
import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from veclip.config.dedupe import DedupeConfig

log = logging.getLogger(__name__)

EDGE_COLUMNS = ["a", "b", "rule", "hamming", "text_jaccard"]


def hamming_col(x: Column, y: Column) -> Column:
    """Bits that differ between two int64 pHash columns (null when either is null)."""
    return F.bit_count(x.bitwiseXOR(y)).cast("int")


def hubs(rows: DataFrame, col: str) -> DataFrame:
    """One hub per value of `col`: an existing row when there is one (is_new false sorts first), else
    the smallest key. Returns (col, hub, hub_phash)."""
    best = F.min(F.struct(F.col("is_new"), F.col("key"), F.col("phash")))
    return (rows.where(F.col(col).isNotNull()).groupBy(col).agg(best.alias("h"))
                .select(col, F.col("h.key").alias("hub"), F.col("h.phash").alias("hub_phash")))


def exact_edges(new: DataFrame, rows: DataFrame, col: str, rule: str) -> DataFrame:
    """Each new row to its value's hub (skipping itself)."""
    return (new.where(F.col(col).isNotNull()).join(hubs(rows, col), on=col)
               .where(F.col("key") != F.col("hub"))
               .select(F.col("key").alias("a"), F.col("hub").alias("b"), F.lit(rule).alias("rule"),
                       hamming_col(F.col("phash"), F.col("hub_phash")).alias("hamming"),
                       F.lit(None).cast("double").alias("text_jaccard")))


def band_widths(bits: int, bands: int) -> list[int]:
    """Split `bits` into `bands` near-equal widths (the first ones one bit wider)."""
    base, extra = divmod(bits, bands)
    return [base + (1 if i < extra else 0) for i in range(bands)]


def probe_masks(width: int, radius: int) -> list[int]:
    """XOR masks of every flip of up to `radius` bits inside a band of `width` bits (0 included)."""
    masks = [0]
    for r in range(1, radius + 1):
        for bits in itertools.combinations(range(width), r):
            masks.append(sum(1 << b for b in bits))
    return masks


def band_values(phash: Column, bands: int) -> Column:
    """array<struct<band int, v bigint>>: each band's bits of the hash, as a small number."""
    out, offset = [], 0
    for i, w in enumerate(band_widths(64, bands)):
        v = F.shiftrightunsigned(phash, offset).bitwiseAND(F.lit((1 << w) - 1))
        out.append(F.struct(F.lit(i).alias("band"), v.alias("v")))
        offset += w
    return F.array(*out)


def image_candidates(new: DataFrame, rows: DataFrame, cfg: DedupeConfig) -> DataFrame:
    """Distinct pHash pairs (p of a new row, q of any row) sharing a probed band: (p, q, q_hub, hamming)."""
    width = max(band_widths(64, cfg.phash_bands))
    masks = F.array(*[F.lit(m) for m in probe_masks(width, cfg.phash_probe_radius)])
    left = (new.where(F.col("phash").isNotNull()).select(F.col("phash").alias("p")).distinct()
               .select("p", F.explode(band_values(F.col("p"), cfg.phash_bands)).alias("bv"))
               .select("p", F.col("bv.band").alias("band"),
                       F.explode(F.transform(masks, lambda m: F.col("bv.v").bitwiseXOR(m))).alias("v")))
    right = (hubs(rows.where(F.col("phash").isNotNull()), "phash")
             .select(F.col("phash").alias("q"), F.col("hub").alias("q_hub"),
                     F.explode(band_values(F.col("phash"), cfg.phash_bands)).alias("bv"))
             .select("q", "q_hub", F.col("bv.band").alias("band"), F.col("bv.v").alias("v")))
    return (left.join(right, on=["band", "v"]).select("p", "q", "q_hub").distinct()
                .withColumn("hamming", hamming_col(F.col("p"), F.col("q"))))


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
