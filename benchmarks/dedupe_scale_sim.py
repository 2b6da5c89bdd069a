"""Dedupe at crawl scale, simulated: the real grouping code on synthetic feature rows, 10^4 to 10^7 rows.

    .venv/bin/python benchmarks/dedupe_scale_sim.py [--sizes 10000,100000,1000000,10000000]
        [--budget-s 5400] [--driver-memory 16g] [--out work/benchmarks/dedupe_scale_sim]

Image decoding is linear and measured by dedupe_scaling.py; what grows faster than the crawl, if
anything, is the search for near-duplicates and the grouping. So this feeds rows that already carry
their features (what `new_features` returns: pHash, pixel sha256, normalised AltText) to the stage's
own `decide` (pHash block index, exact hubs, connected components, boilerplate counting, MinHash text
candidates, keep policy, audit) and times it until the silver rows are counted. Per block of 100
rows (ids 100g .. 100g+99):

    r = 0, 2 .. 20   originals: a random 64-bit pHash and a random 8-word AltText each
    r = 1, 3 .. 21   one near copy of the original just before it, its pHash with 0, 1 .. 10 bits
                     flipped at uniformly random positions, and an AltText of its own (one copy per
                     original, no shared text: recall by distance is the image index's, per pair)
    r = 22, 23       exact copies of originals 2 and 4: same pixels (exact_pixels), same bytes
    r = 24, 25       a text original and its text copy: one word of 8 changed (Jaccard 0.75), an image
                     12, 14 or 16 bits away (beyond the image rule, within text_image_max_hamming)
    r = 50, 51       in every fifth block: a product title "acme trail runner mens shoe sku NNNNNN", unique
                     but near-equal to every other (Jaccard 0.71): 0.4% of rows crowd a few MinHash bands
                     (the hub buckets that bucket_cap exists for); their images are unrelated
    r = 95..98       the shop's name as AltText (low-information by counting)
    r = 99           an undecodable image (hash_error)
    otherwise        unrelated originals

Per size it prints candidate pairs per row (image and text), seconds, rows/s, recall of the planted
copies by distance (share of copies put in their original's group), false merges (rows whose group
holds a row of another planted group: chance pairs within the threshold, which a 64-bit hash makes
inevitable at scale, see below), buckets over the cap, and the time ratio per 10x rows. Saves
results.csv and a plot. When the budget runs out, the running size is cancelled and reported.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import threading
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyspark.sql import functions as F  # noqa: E402

from veclip.config import load_config  # noqa: E402
from veclip.dedupe.features import text_features  # noqa: E402
from veclip.dedupe.groups import shares_key  # noqa: E402
from veclip.dedupe.stage import count_new, decide  # noqa: E402
from veclip.progress import SparkProgress  # noqa: E402
from veclip.report import StageReport  # noqa: E402
from veclip.spark import get_spark  # noqa: E402
from veclip.tables import Tables  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 50_000
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)

SCHEMA = ("key string, image_sha256 string, width int, height int, alt_text string, alt_text_raw string, "
          "url string, source string, source_key string, pixel_sha256 string, phash long, hash_error string, "
          "truth string, kind string, dist int")


def mix(x: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of uint64 ids: deterministic pseudo-random 64-bit values."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def flips(ids: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """For each id, a mask of `bits` distinct bit positions, uniformly random (seeded by the id)."""
    keys = mix(ids[:, None] * np.uint64(64) + np.arange(64, dtype=np.uint64)[None, :], 5)
    order = np.argsort(keys, axis=1).astype(np.uint64)         # a random permutation of 0..63 per id
    take = np.arange(64)[None, :] < bits[:, None]
    return np.bitwise_or.reduce(np.where(take, np.left_shift(np.uint64(1), order), np.uint64(0)), axis=1)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
VOCABULARY = ["".join(_LETTERS[(i // 26 ** k) % 26] for k in range(5)) for i in range(VOCAB)]


def words(ids: np.ndarray, salt: int, n: int = 8) -> np.ndarray:
    """(len(ids), n) vocabulary indices: an AltText of n pseudo-words per id."""
    return np.stack([(mix(ids, salt * 16 + k) % np.uint64(VOCAB)).astype(np.int64) for k in range(n)], axis=1)


def join(ix: np.ndarray) -> list[str]:
    return [" ".join(VOCABULARY[i] for i in row) for row in ix]


def hexs(v: np.ndarray) -> list[str]:
    return [f"{int(x):016x}" for x in v]


def generate(batch: pd.DataFrame) -> pd.DataFrame:
    """The synthetic rows of one batch of ids (pure numpy; see the module docstring)."""
    ids = batch["id"].to_numpy(dtype=np.int64).astype(np.uint64)
    g, r = ids // np.uint64(100), (ids % np.uint64(100)).astype(np.int64)
    base = g * np.uint64(100)
    near = (r >= 1) & (r <= 21) & (r % 2 == 1)                 # copy of the original just before it
    pixel_copy, bytes_copy, text_copy = r == 22, r == 23, r == 25
    dist = np.zeros(len(ids), dtype=np.int64)
    dist[near] = (r[near] - 1) // 2
    dist[text_copy] = 12 + 2 * (g[text_copy] % np.uint64(3)).astype(np.int64)
    source = ids.copy()
    source[near | text_copy] = ids[near | text_copy] - np.uint64(1)
    source[pixel_copy] = base[pixel_copy] + np.uint64(2)
    source[bytes_copy] = base[bytes_copy] + np.uint64(4)
    image_copy = near | pixel_copy | bytes_copy
    phash = mix(source, 1) ^ flips(ids, dist)
    ix = words(np.where(pixel_copy | bytes_copy | text_copy, source, ids), 2)   # near copies: own AltText
    ix[text_copy, -1] = (mix(ids[text_copy], 99) % np.uint64(VOCAB)).astype(np.int64)   # one word changed
    alt = np.array(join(ix), dtype=object)
    title = ((r == 50) | (r == 51)) & (g % np.uint64(5) == 0)
    skus = (mix(ids[title], 7) % np.uint64(1_000_000)).astype(np.int64)
    alt[title] = [f"acme trail runner mens shoe sku {k}" for k in skus]
    shop = (r >= 95) & (r <= 98)
    alt[shop] = "Example Store"
    broken = r == 99
    pixel = np.array(hexs(mix(np.where(pixel_copy, source, ids), 3)), dtype=object)
    pixel[broken] = None
    sha = hexs(mix(np.where(bytes_copy, source, ids), 4))
    keys = hexs(ids)
    kind = np.select([near, pixel_copy, bytes_copy, r == 24, text_copy, title, shop, broken],
                     ["near_copy", "pixel_copy", "bytes_copy", "text_original", "text_copy", "title", "shop",
                      "broken"], "original")
    truth = np.where(kind == "text_copy", source, np.where(image_copy, source, ids))
    return pd.DataFrame({
        "key": keys, "image_sha256": sha, "width": np.where(image_copy, 224, 256).astype(np.int32),
        "height": np.full(len(ids), 224, dtype=np.int32), "alt_text": alt, "alt_text_raw": alt, "url": "",
        "source": "sim", "source_key": keys, "pixel_sha256": pixel,
        "phash": pd.Series(phash.view(np.int64), dtype="Int64").mask(broken),
        "hash_error": np.where(broken, "decode_error: synthetic", None), "truth": hexs(truth),
        "kind": kind, "dist": dist.astype(np.int32)})


def synthetic(spark, n: int, parts: int):
    rows = spark.range(n, numPartitions=parts).mapInPandas(lambda it: (generate(b) for b in it), SCHEMA)
    feats = text_features(rows.drop("truth", "kind", "dist"), ()).withColumn("is_new", F.lit(True))
    truth = rows.select("key", "truth", "kind", "dist")
    return feats.localCheckpoint(eager=True), truth.localCheckpoint(eager=True)


def expected_chance_pairs(n: int, t: int) -> float:
    """Unrelated pairs within t bits expected among n uniform 64-bit hashes."""
    p = sum(math.comb(64, i) for i in range(t + 1)) / 2 ** 64
    return n * (n - 1) / 2 * p


def theory_recall(d: int, blocks: int, key_blocks: int) -> float:
    """Share of pairs at d uniformly placed bits that share a key of the block index."""
    if d == 0:
        return 1.0
    rng = np.random.default_rng(d)
    masks = np.array([int(np.bitwise_or.reduce(np.left_shift(np.uint64(1), rng.choice(64, d, replace=False)
                                                             .astype(np.uint64)))) for _ in range(20000)],
                     dtype=np.uint64).view(np.int64)
    return float(shares_key(np.zeros(len(masks), dtype=np.int64), masks, blocks, key_blocks).mean())


def measure(spark, cfg, n: int, parts: int) -> dict:
    tables = Tables(cfg, spark)
    t0 = time.monotonic()
    feats, truth = synthetic(spark, n, parts)
    gen_s = time.monotonic() - t0
    report = StageReport("dedupe-sim")
    t0 = time.monotonic()
    with SparkProgress(spark, f"sim {n:,}"):
        silver, _, _ = decide(spark, tables, feats, cfg.dedupe, report)
        report.count("new_rows", n)
        count_new(silver, report)
    secs = time.monotonic() - t0
    groups = silver.select("key", "dup_group").join(truth, "key")
    src = groups.select(F.col("key").alias("truth"), F.col("dup_group").alias("truth_group"))
    copies = groups.where(F.col("kind").isin("near_copy", "pixel_copy", "bytes_copy", "text_copy")).join(src, "truth")
    rec = (copies.groupBy("kind", "dist").agg(F.count(F.lit(1)).alias("n"),
                                              F.avg((F.col("dup_group") == F.col("truth_group")).cast("int")).alias("recall"))
                 .orderBy("kind", "dist").toPandas())
    mixed = (groups.where(F.col("kind") != "broken").groupBy("dup_group")
                   .agg(F.countDistinct("truth").alias("t"), F.count(F.lit(1)).alias("rows")).where(F.col("t") > 1)
                   .agg(F.count(F.lit(1)).alias("groups"), F.sum("rows").alias("rows")).first())
    c = report.counts
    out = dict(rows=n, seconds=round(secs, 1), rows_per_s=round(n / secs), generate_s=round(gen_s, 1),
               image_pairs_per_row=c.get("image_candidate_pairs", 0) / n,
               text_pairs_per_row=c.get("text_candidate_pairs", 0) / n,
               image_buckets_over_cap=c.get("image_buckets_over_cap", 0),
               text_buckets_over_cap=c.get("text_buckets_over_cap", 0),
               text_rows_in_buckets_over_cap=c.get("text_rows_in_buckets_over_cap", 0),
               mixed_groups=int(mixed["groups"] or 0), rows_in_mixed_groups=int(mixed["rows"] or 0),
               chance_pairs_expected=expected_chance_pairs(n, cfg.dedupe.phash_max_hamming),
               duplicates=c.get("new_duplicates", 0), canonical=c.get("new_canonical", 0))
    for r in rec.itertuples():
        label = f"recall_{r.kind}" + (f"_{r.dist}" if r.kind in ("near_copy", "text_copy") else "")
        out[label] = round(float(r.recall), 4)
    feats.unpersist()
    truth.unpersist()
    return out


def run_with_budget(spark, cfg, n: int, parts: int, left_s: float):
    """measure(), cancelled (None) when it runs past left_s."""
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(r=measure(spark, cfg, n, parts)), daemon=True)
    th.start()
    th.join(timeout=max(left_s, 1))
    if th.is_alive():
        spark.sparkContext.cancelAllJobs()
        th.join(timeout=120)
        return None
    return box.get("r")


def save_plot(df: pd.DataFrame, out: str, theory: dict) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    a.loglog(df.rows, df.seconds, "o-", label="measured")
    a.loglog(df.rows, df.seconds.iloc[0] * df.rows / df.rows.iloc[0], ":", color="grey", label="linear")
    a.set_xlabel("rows"), a.set_ylabel("seconds (decide + count)"), a.legend(), a.set_title("time")
    b.semilogx(df.rows, df.image_pairs_per_row, "o-", label="image")
    b.semilogx(df.rows, df.text_pairs_per_row, "s-", label="text")
    b.set_xlabel("rows"), b.set_ylabel("candidate pairs per row"), b.legend(), b.set_title("candidates per row")
    b.set_ylim(bottom=0)
    for row in df.itertuples():
        rec = [getattr(row, f"recall_near_copy_{d}", np.nan) for d in range(11)]
        c.plot(range(11), rec, "o-", label=f"{row.rows:,} rows")
    c.plot(list(theory), list(theory.values()), "k:", label="uniform bits, theory")
    c.set_xlabel("planted pHash distance (bits)"), c.set_ylabel("recall"), c.set_ylim(0, 1.02), c.legend()
    c.set_title("near copies found")
    path = os.path.join(out, "dedupe_scale_sim.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000")
    ap.add_argument("--budget-s", type=float, default=5400)
    ap.add_argument("--driver-memory", default="16g")
    ap.add_argument("--index", default="blocks", help="dedupe.phash_index for every size (default blocks)")
    ap.add_argument("--out", default="work/benchmarks/dedupe_scale_sim")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    os.makedirs(args.out, exist_ok=True)
    root = os.path.join(args.out, "root")
    shutil.rmtree(root, ignore_errors=True)
    cfg = load_config(os.path.join(REPO, "conf", "local.yaml"),
                      [f"paths.root={root}", f"spark.driver_memory={args.driver_memory}",
                       f"dedupe.phash_index={args.index}", "mlflow.enabled=false"])
    spark = get_spark(cfg)
    d = cfg.dedupe
    print(f"index: {d.phash_index}, {d.phash_tables} tables of {d.phash_key_blocks}/{d.phash_blocks} blocks, "
          f"bucket cap {d.bucket_cap}, threshold {d.phash_max_hamming} bits; load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    results, t_start = [], time.monotonic()
    for n in sizes:
        left = args.budget_s - (time.monotonic() - t_start)
        if left <= 0:
            print(f"{n:,} rows: not run (budget of {args.budget_s:.0f}s spent)")
            continue
        parts = max(2, n // 100_000)
        spark.conf.set("spark.sql.shuffle.partitions", str(max(4, n // 50_000)))
        r = run_with_budget(spark, cfg, n, parts, left)
        if r is None:
            print(f"{n:,} rows: cancelled after the budget ran out")
            break
        r["load_avg"] = round(os.getloadavg()[0], 1)
        results.append(r)
        print(pd.Series(r).to_string(), flush=True)
        pd.DataFrame(results).to_csv(os.path.join(args.out, "results.csv"), index=False)
    if not results:
        return
    df = pd.DataFrame(results)
    df["time_ratio"] = df.seconds / df.seconds.shift(1)
    df["rows_ratio"] = df.rows / df.rows.shift(1)
    df["time_ratio_per_10x"] = df.time_ratio ** (1 / np.log10(df.rows_ratio))   # the step scaled to 10x rows
    df.to_csv(os.path.join(args.out, "results.csv"), index=False)
    cols = ["rows", "seconds", "rows_per_s", "rows_ratio", "time_ratio", "time_ratio_per_10x", "image_pairs_per_row", "text_pairs_per_row",
            "text_buckets_over_cap", "mixed_groups", "chance_pairs_expected", "load_avg"]
    print("\n" + df[cols].to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    rec = [c for c in df.columns if c.startswith("recall_")]
    print("\nrecall of planted copies (share put in their original's group):")
    print(df.set_index("rows")[rec].T.to_string(float_format=lambda v: f"{v:.4f}"))
    theory = {dd: round(theory_recall(dd, d.phash_blocks, d.phash_key_blocks), 3) for dd in range(11)}
    print("\nexpected for uniformly placed bits (block index):", theory)
    first, last = df.iloc[0], df.iloc[-1]
    print(f"\ncandidates per row, image: {first.image_pairs_per_row:.3f} at {first.rows:,} -> "
          f"{last.image_pairs_per_row:.3f} at {last.rows:,} rows; time {last.seconds / first.seconds:.1f}x for "
          f"{last.rows / first.rows:,.0f}x rows")
    print(f"saved {os.path.join(args.out, 'results.csv')} {save_plot(df, args.out, theory)}")


if __name__ == "__main__":
    main()
