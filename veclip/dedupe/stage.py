"""The dedupe stage: `bronze` -> `silver` (every row, with its duplicate group and canonical flag)
+ `dedupe_audit` (each dropped row: what it duplicates, by which rule, with the evidence).

    report = run_dedupe(cfg, spark)       # or: spark-submit jobs/dedupe.py --config conf/local.yaml

Plan of a run (only bronze rows not yet in silver are processed; rerunning changes nothing):
  1. features of the new rows (pandas UDFs): pixel sha256 + pHash from one decode, normalised text;
  2. image rules against new + silver rows: exact_bytes, exact_pixels (hash hubs), near_image (pHash
     block index, Hamming threshold) -> new rows grouped by connected components, a group touching an
     existing silver group joins it;
  3. AltTexts shared by `boilerplate_min_groups` image groups are flagged low-information;
  4. near_text: informative near-equal AltTexts AND images within the looser threshold merge groups
     (text alone never merges: distinct photos sharing a product title stay apart; see text_groups);
  5. keep policy (veclip.dedupe.policy) picks each new group's canonical row; each dropped row gets its
     best match; undecodable images get `hash_error`, no canonical flag, and a quarantine row.
Incremental: silver rows never change group or canonical flag (only `alt_text_low_info` may turn on
when their AltText becomes shared), so captions made for kept samples stay valid; a re-crawl of a
kept photo joins its group; new rows matching two existing groups join the smaller group id (the
existing groups are not merged).
Accounting: bronze = silver canonical + silver duplicates + unreadable; duplicates by rule.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from veclip.config import Config
from veclip.config.dedupe import DedupeConfig
from veclip.dedupe import groups as G
from veclip.dedupe import text_groups as TG
from veclip.dedupe.buckets import over_cap_counts
from veclip.dedupe.features import image_features, text_features
from veclip.dedupe.policy import RULES, choose_canonical, explain_duplicates
from veclip.inference import arrow_rows_per_batch
from veclip.progress import SparkProgress
from veclip.report import StageReport
from veclip.schemas import DEDUPE_AUDIT, QUARANTINE, SILVER
from veclip.tables import Tables

log = logging.getLogger(__name__)

EXISTING_COLUMNS = ["key", "dup_group", "is_canonical", "image_sha256", "pixel_sha256", "phash", "width",
                    "height", "alt_text_norm", "alt_text_low_info", "hash_error"]


def conform(df: DataFrame, schema) -> DataFrame:
    """Exactly the table's columns, in order, with its types."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def new_features(spark: SparkSession, new_bronze: DataFrame, d: DedupeConfig) -> DataFrame:
    """Hash images and texts of the new bronze rows once; the result (no bytes) is checkpointed now,
    while Arrow's batch size is set (it is read when the UDF runs)."""
    cols = ["key", "image", "image_sha256", "width", "height", "alt_text", "alt_text_raw", "url", "source",
            "source_key"]
    with arrow_rows_per_batch(spark, d.batch_size):
        feats = text_features(image_features(new_bronze.select(*cols), d.device), d.boilerplate_texts)
        return feats.withColumn("is_new", F.lit(True)).localCheckpoint(eager=True)


def existing_rows(tables: Tables, spark: SparkSession) -> DataFrame:
    if tables.exists("silver"):
        return tables.read("silver").select(*EXISTING_COLUMNS).withColumn("is_new", F.lit(False))
    schema = conform(spark.createDataFrame([], SILVER), SILVER).select(*EXISTING_COLUMNS).schema
    return spark.createDataFrame([], schema).withColumn("is_new", F.lit(False))


def count_candidates(report: StageReport, rule: str, pairs: DataFrame, over: Optional[DataFrame], cap: int) -> None:
    """<rule>_candidate_pairs, and the LSH buckets over the cap with the rows in them."""
    if over is not None:
        buckets, members = over_cap_counts(over)
        report.count(f"{rule}_buckets_over_cap", buckets)
        report.count(f"{rule}_rows_in_buckets_over_cap", members)
        if buckets:
            log.warning("dedupe: %d %s LSH buckets hold more than %d members (%d in all): each is paired "
                        "within sliding windows only", buckets, rule, cap, members)
    report.count(f"{rule}_candidate_pairs", pairs.count())


def image_edges(new_ok: DataFrame, existing: DataFrame, d: DedupeConfig, report: StageReport) -> DataFrame:
    """exact_bytes + exact_pixels + near_image edges of new rows, with b's existing group (b_group)."""
    cols = ["key", "is_new", "image_sha256", "pixel_sha256", "phash"]
    rows = new_ok.select(*cols).union(existing.where(F.col("hash_error").isNull()).select(*cols))
    index, why = G.choose_index(new_ok, rows, d)
    report.details["phash_index"] = f"{index} ({why})"
    cand, over = G.image_candidates(new_ok, rows, d, index)
    cand = cand.localCheckpoint(eager=False)
    count_candidates(report, "image", cand.where(F.col("p") != F.col("q")), over, d.bucket_cap)
    edges = (G.exact_edges(new_ok, rows, "image_sha256", "exact_bytes")
             .union(G.exact_edges(new_ok, rows, "pixel_sha256", "exact_pixels"))
             .union(G.near_image_edges(new_ok, cand, d.phash_max_hamming)))
    groups = existing.select(F.col("key").alias("b"), F.col("dup_group").alias("b_group"))
    return edges.join(groups, "b", "left").localCheckpoint(eager=False)


def image_groups(new_ok: DataFrame, edges: DataFrame, d: DedupeConfig) -> DataFrame:
    """New rows + label_a (new component), group_a (existing group joined), node (the image group)."""
    nodes = G.attach(edges.select("a", "b", "b_group"), d.max_iterations, "image matches")
    out = (new_ok.join(nodes.withColumnRenamed("node", "key"), "key", "left")
                 .withColumn("label_a", F.coalesce("label", "key")).withColumnRenamed("group", "group_a")
                 .drop("label"))
    return (out.withColumn("node", F.coalesce("group_a", "label_a"))
               .withColumn("node_existing", F.col("group_a").isNotNull()).localCheckpoint(eager=False))


def low_info(feats: DataFrame, new_a: DataFrame, existing: DataFrame, d: DedupeConfig):
    """(new rows' low_info per key, existing keys to flag): boilerplate by form, or shared by
    `boilerplate_min_groups` image groups among new and silver rows."""
    texts = feats.where(TG.has_text()).select("alt_text_norm").distinct()
    counted = new_a.select("alt_text_norm", "node").union(
        existing.join(texts, "alt_text_norm", "left_semi").select("alt_text_norm", F.col("dup_group").alias("node")))
    shared = (TG.shared_texts(counted, d.boilerplate_min_groups)
              .select("alt_text_norm", F.lit(True).alias("shared")).localCheckpoint(eager=False))
    new_flags = (feats.join(shared, "alt_text_norm", "left")
                      .select("key", (F.col("alt_text_boilerplate") | F.coalesce("shared", F.lit(False)))
                              .alias("alt_text_low_info")))
    to_flag = existing.where(~F.col("alt_text_low_info")).join(shared, "alt_text_norm", "left_semi")
    return new_flags.localCheckpoint(eager=False), to_flag.select("key").localCheckpoint(eager=False)


def text_edges(new_a: DataFrame, existing: DataFrame, to_flag: DataFrame, d: DedupeConfig,
               report: StageReport) -> Optional[DataFrame]:
    """near_text edges (a, b, rule, hamming, text_jaccard, a_node, a_existing, b_node, b_existing)."""
    if d.text_image_max_hamming < 0:
        return None
    cols = ["key", "is_new", "node", "node_existing", "alt_text_norm", "low_info", "phash"]
    old = (existing.where(F.col("hash_error").isNull()).join(to_flag.withColumn("f", F.lit(True)), "key", "left")
                   .select("key", "is_new", F.col("dup_group").alias("node"), F.lit(True).alias("node_existing"),
                           "alt_text_norm", (F.col("alt_text_low_info") | F.col("f").isNotNull()).alias("low_info"),
                           "phash"))
    rows = new_a.withColumn("low_info", F.col("alt_text_low_info")).select(*cols).union(old.select(*cols))
    cand, over = TG.text_candidates(rows, d)
    cand = cand.localCheckpoint(eager=False)
    count_candidates(report, "text", cand, over, d.bucket_cap)
    return TG.near_text_edges(cand, d).localCheckpoint(eager=False)


def text_groups(t_edges: Optional[DataFrame], d: DedupeConfig) -> Optional[DataFrame]:
    """Image groups merged by near_text edges: (node, label_b, group_b). Existing groups never merge."""
    if t_edges is None:
        return None
    e = t_edges.where(~(F.col("a_existing") & F.col("b_existing")))
    swap = F.col("a_existing")
    e = e.select(F.when(swap, F.col("b_node")).otherwise(F.col("a_node")).alias("a"),
                 F.when(swap, F.col("a_node")).otherwise(F.col("b_node")).alias("b"),
                 F.when(swap | F.col("b_existing"), F.when(swap, F.col("a_node")).otherwise(F.col("b_node")))
                 .alias("b_group"))
    return G.attach(e, d.max_iterations, "text matches").withColumnRenamed("label", "label_b") \
        .withColumnRenamed("group", "group_b")


def final_groups(feats: DataFrame, new_a: DataFrame, flags: DataFrame, tg: Optional[DataFrame]) -> DataFrame:
    """Every new row with dup_group and is_canonical (duplicate_of/dup_rule come later)."""
    rows = new_a.drop("alt_text_low_info").join(flags, "key")
    if tg is not None:
        rows = rows.join(tg.withColumnRenamed("node", "label_a"), "label_a", "left")
    else:
        rows = rows.withColumn("label_b", F.lit(None).cast("string")).withColumn("group_b", F.lit(None).cast("string"))
    rows = rows.withColumn("group", F.coalesce("group_a", "group_b"))
    joined = (rows.where(F.col("group").isNotNull())
                  .withColumn("dup_group", F.col("group")).withColumn("is_canonical", F.lit(False)))
    fresh = choose_canonical(rows.where(F.col("group").isNull())
                             .withColumn("unit", F.coalesce("label_b", "label_a")), "unit")
    cols = ["key", "dup_group", "is_canonical", "group"]
    unreadable = (feats.where(F.col("hash_error").isNotNull())
                       .select("key", F.col("key").alias("dup_group"), F.lit(False).alias("is_canonical"),
                               F.lit(None).cast("string").alias("group")))
    return joined.select(*cols).union(fresh.select(*cols)).union(unreadable)


def decide(spark: SparkSession, tables: Tables, feats: DataFrame, d: DedupeConfig, report: StageReport):
    """Silver rows of the new keys, silver keys whose AltText became low-information, audit rows."""
    existing = existing_rows(tables, spark)
    new_ok = feats.where(F.col("hash_error").isNull())
    i_edges = image_edges(new_ok, existing, d, report)
    new_a = image_groups(new_ok, i_edges, d)
    flags, to_flag = low_info(feats, new_a, existing, d)
    new_a = new_a.join(flags, "key").localCheckpoint(eager=False)
    t_edges = text_edges(new_a, existing, to_flag, d, report)
    groups = final_groups(feats, new_a, flags, text_groups(t_edges, d)).localCheckpoint(eager=False)
    edges = i_edges.select(*G.EDGE_COLUMNS)
    if t_edges is not None:
        edges = edges.union(t_edges.select(*G.EDGE_COLUMNS))
    group_of = groups.select("key", F.col("dup_group").alias("group"), F.col("is_canonical").alias("canonical")) \
        .union(existing.select("key", F.col("dup_group").alias("group"), F.col("is_canonical").alias("canonical")))
    readable_dups = groups.join(new_ok.select("key"), "key").where(~F.col("is_canonical"))
    why = explain_duplicates(readable_dups, edges, group_of)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = (feats.join(flags, "key").join(groups.drop("group"), "key").join(why, "key", "left")
                 .withColumn("deduped_at", F.lit(now)).withColumn("decided_at", F.lit(now)))
    rows = rows.localCheckpoint(eager=False)
    silver = conform(rows, SILVER)
    audit = conform(rows.where(F.col("duplicate_of").isNotNull()), DEDUPE_AUDIT)
    return silver, to_flag, audit


def count_new(silver_new: DataFrame, report: StageReport) -> None:
    """This run's rows by outcome and rule (one Spark job)."""
    rows = (silver_new.groupBy("is_canonical", "dup_rule", F.col("hash_error").isNotNull().alias("bad"))
                      .count().collect())
    for r in rows:
        if r["bad"]:
            report.count("new_unreadable", r["count"])
        elif r["is_canonical"]:
            report.count("new_canonical", r["count"])
        else:
            report.count("new_duplicates", r["count"])
            report.count(f"new_{r['dup_rule'] or 'unexplained'}", r["count"])
    for name in ("new_canonical", "new_duplicates", "new_unreadable"):
        report.count(name, 0)
    report.identity("new = canonical + duplicates + unreadable", ["new_rows"],
                    ["new_canonical", "new_duplicates", "new_unreadable"])


def quarantine_rows(feats: DataFrame, now: dt.datetime) -> DataFrame:
    bad = feats.where(F.col("hash_error").isNotNull())
    return conform(bad.select("key", F.lit("dedupe").alias("stage"),
                              F.split("hash_error", ":").getItem(0).alias("reason"), F.col("hash_error").alias("detail"),
                              "url", "alt_text_raw", "source", "source_key", F.lit(now).alias("quarantined_at")),
                   QUARANTINE)


def write(tables: Tables, feats: DataFrame, silver_new: DataFrame, to_flag: DataFrame, audit: DataFrame,
          report: StageReport) -> None:
    """Audit first (a crash before silver is redone identically), then silver and quarantine."""
    if report.counts.get("new_duplicates", 0) or not tables.exists("dedupe_audit"):
        audit_cols = [f.name for f in DEDUPE_AUDIT.fields if f.name != "key"]
        tables.merge("dedupe_audit", audit, ["key"], update=audit_cols)
    flagged = (tables.read("silver").join(to_flag, "key", "left_semi").withColumn("alt_text_low_info", F.lit(True))
               if tables.exists("silver") else None)
    src = silver_new if flagged is None else silver_new.unionByName(conform(flagged, SILVER))
    result = tables.merge("silver", src, ["key"], update=["alt_text_low_info"])
    report.count("silver_inserted", result.inserted)
    report.count("low_info_flagged_existing", result.updated)
    if report.counts.get("new_unreadable", 0):
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        q = tables.merge("quarantine", quarantine_rows(feats, now), ["key", "stage"])
        report.count("quarantined", q.inserted)


def count_totals(tables: Tables, report: StageReport) -> None:
    """Whole-table accounting after the run: bronze = canonical + duplicates + unreadable."""
    report.count("bronze_rows", tables.read("bronze").count())
    for name in ("silver_canonical", "silver_duplicates", "silver_unreadable", *(f"dup_{r}" for r in RULES)):
        report.count(name, 0)
    if tables.exists("silver"):
        rows = (tables.read("silver").groupBy("is_canonical", "dup_rule",
                                              F.col("hash_error").isNotNull().alias("bad")).count().collect())
        for r in rows:
            kind = "unreadable" if r["bad"] else "canonical" if r["is_canonical"] else "duplicates"
            report.count(f"silver_{kind}", r["count"])
            if kind == "duplicates":
                report.count(f"dup_{r['dup_rule']}", r["count"])
    report.identity("bronze = silver canonical + duplicates + unreadable", ["bronze_rows"],
                    ["silver_canonical", "silver_duplicates", "silver_unreadable"])
    report.identity("silver duplicates = sum of rules", ["silver_duplicates"], [f"dup_{r}" for r in RULES])


def index_summary(d: DedupeConfig) -> str:
    """One line on how near-duplicate pairs are searched, for the report."""
    return (f"pHash index {d.phash_index}: blocks = {d.phash_tables} tables of {d.phash_key_blocks} of "
            f"{d.phash_blocks} blocks; LSH buckets capped at {d.bucket_cap}")


def run_dedupe(cfg: Config, spark: SparkSession) -> StageReport:
    """Deduplicate the bronze rows not yet in silver against each other and against silver."""
    d = cfg.dedupe
    tables = Tables(cfg, spark)
    report = StageReport("dedupe")
    bronze = tables.read("bronze")
    new_keys = tables.missing(bronze.select("key"), "silver", ["key"]).localCheckpoint(eager=False)
    with SparkProgress(spark, "dedupe"):
        n_new = new_keys.count()
        report.count("new_rows", n_new)
        log.info("dedupe: %d new bronze rows to deduplicate", n_new)
        if n_new:
            feats = new_features(spark, bronze.join(new_keys, "key", "left_semi"), d)
            silver_new, to_flag, audit = decide(spark, tables, feats, d, report)
            count_new(silver_new, report)
            write(tables, feats, silver_new, to_flag, audit, report)
        count_totals(tables, report)
    report.details["thresholds"] = (f"pHash <= {d.phash_max_hamming} bits (always found <= "
                                    f"{d.phash_guaranteed_hamming}); text Jaccard >= {d.text_min_jaccard} "
                                    f"with pHash <= {d.text_image_max_hamming}")
    report.details["index"] = index_summary(d)
    report.finish()
    log.info("dedupe accounting:\n%s", report.format())
    return report
