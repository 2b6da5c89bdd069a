"""The dedupe stage end to end on real images: CC12M originals + re-encoded/resized/cropped copies.

One module-scoped run of the stage (then a rerun through jobs/dedupe.py, then an incremental run);
the tests assert on the tables it leaves behind.
"""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.bronze_fixture import Scenario, bronze_frame, cc12m_samples, crop
from tests.conftest import REPO, shared_path
from veclip.dedupe import groups as G
from veclip.dedupe.phash import hamming
from veclip.tables import Tables

SHOP = "Example Store"
TITLE = "Vintage leather handbag with gold buckle"


def build_scenario(shard) -> Scenario:
    originals = cc12m_samples(str(shard))
    for i, alt in [(10, TITLE), (11, TITLE), (12, SHOP), (13, SHOP), (14, SHOP), (15, "Click to enlarge")]:
        stem, data, _, url = originals[i]
        originals[i] = (stem, data, alt, url)
    sc = Scenario(originals, "cc12m-train-0000.tar")
    for i, how in enumerate(["reencode", "lossless", "resize", "crop", "colour", "watermark"]):
        sc.copy(i, how, None if i % 2 else "IMG_0001.jpg", "recrawl.tar")
    sc.copy(6, "bytes", "Skipping rope", "mirror.tar")
    first = sc.copy(7, "crop", None, "recrawl.tar")
    sc.add(crop(first["image"], 99), None, "recrawl.tar", "crop-of-crop-7", of=sc.rows[7]["key"])
    sc.copy(1, "heavy_crop", sc.rows[1]["alt_text"], "recrawl.tar", name="text-copy")
    sc.copy(8, "heavy_crop", "IMG_2041.JPG", "recrawl.tar", name="no-text-copy")
    sc.expected[sc.by_name["no-text-copy"]["key"]] = sc.by_name["no-text-copy"]["key"]   # stays alone
    sc.add(sc.rows[16]["image"][:400], "a broken download", "broken.tar", "broken", name="broken")
    return sc


@pytest.fixture(scope="module")
def run(spark, cc12m_shard, tmp_path_factory):
    from veclip.config import load_config
    from veclip.dedupe import run_dedupe

    root = tmp_path_factory.mktemp("dedupe")
    cfg = load_config(str(REPO / "conf" / "local.yaml"),
                      [f"paths.root={root}", "spark.master=local[2]", "spark.shuffle_partitions=2"])
    sc = build_scenario(cc12m_shard)
    tables = Tables(cfg, spark)
    tables.merge("bronze", bronze_frame(spark, sc.rows), ["key"])
    report = run_dedupe(cfg, spark)
    silver = tables.read("silver").toPandas().set_index("key")
    audit = tables.read("dedupe_audit").toPandas().set_index("key")
    return dict(cfg=cfg, root=root, sc=sc, tables=tables, report=report, silver=silver, audit=audit,
                versions={t: tables.version(t) for t in ("silver", "dedupe_audit")})


def partition(keys_to_group: dict) -> set:
    out: dict = {}
    for k, g in keys_to_group.items():
        out.setdefault(g, set()).add(k)
    return {frozenset(v) for v in out.values()}


def test_every_copy_joins_its_original_and_distinct_images_stay_apart(run):
    sc, silver = run["sc"], run["silver"]
    assert sorted(silver.index) == sorted(sc.expected)           # one silver row per bronze row
    readable = silver[silver.hash_error.isna()]
    assert partition(readable.dup_group.to_dict()) == partition(
        {k: v for k, v in sc.expected.items() if k in readable.index})
    title = silver.loc[[sc.rows[10]["key"], sc.rows[11]["key"]]]
    assert hamming(*title.phash.values) > run["cfg"].dedupe.text_image_max_hamming     # really other photos
    assert title.dup_group.nunique() == 2 and not title.alt_text_low_info.any()   # same title: not merged
    assert "image" not in silver.columns


def test_rules_and_evidence_of_each_dropped_row(run):
    sc, silver, audit = run["sc"], run["silver"], run["audit"]
    rule = {k: silver.dup_rule[sc.by_name[k]["key"]] for k in
            ["reencode-0", "lossless-1", "resize-2", "crop-3", "colour-4", "watermark-5", "bytes-6", "text-copy"]}
    assert rule == {"reencode-0": "near_image", "lossless-1": "exact_pixels", "resize-2": "near_image",
                    "crop-3": "near_image", "colour-4": "near_image", "watermark-5": "near_image",
                    "bytes-6": "exact_bytes", "text-copy": "near_text"}
    dups = silver[~silver.is_canonical & silver.hash_error.isna()]
    assert sorted(audit.index) == sorted(dups.index)
    assert (audit.dup_rule == dups.dup_rule[audit.index]).all()
    assert (audit.duplicate_of == dups.duplicate_of[audit.index]).all()
    assert (silver.dup_group[audit.duplicate_of].values == audit.dup_group.values).all()   # matched in-group
    near = audit[audit.dup_rule == "near_image"]
    assert (near.hamming <= run["cfg"].dedupe.phash_max_hamming).all()
    text = audit.loc[sc.by_name["text-copy"]["key"]]
    assert run["cfg"].dedupe.phash_max_hamming < text.hamming <= run["cfg"].dedupe.text_image_max_hamming
    assert text.text_jaccard == 1.0
    lone = silver.loc[sc.by_name["no-text-copy"]["key"]]          # far crop, file-name AltText: not merged
    assert hamming(lone.phash, silver.phash[sc.rows[8]["key"]]) > run["cfg"].dedupe.phash_max_hamming
    assert lone.is_canonical and lone.alt_text_low_info


def test_keep_policy_picks_one_canonical_per_group_by_size_text_key(run):
    sc, silver = run["sc"], run["silver"]
    readable = silver[silver.hash_error.isna()].copy()
    assert (readable.groupby("dup_group").is_canonical.sum() == 1).all()
    assert (readable[readable.is_canonical].index == readable[readable.is_canonical].dup_group).all()
    words = readable.alt_text_norm.fillna("").map(lambda t: len(set(t.split())))
    readable["order"] = list(zip(-(readable.width * readable.height), readable.alt_text_low_info, -words,
                                 readable.index))
    best = readable.reset_index().sort_values("order").groupby("dup_group").key.first()
    assert set(best) == set(readable[readable.is_canonical].index)
    assert silver.is_canonical[sc.rows[2]["key"]]                 # the original beats its smaller copy


def test_boilerplate_and_shared_alt_texts_are_low_information(run):
    sc, silver = run["sc"], run["silver"]
    flags = [silver.alt_text_low_info[sc.rows[i]["key"]] for i in (12, 13, 14, 15, 17)]
    assert flags == [True, True, True, True, False]
    assert silver.loc[[sc.rows[i]["key"] for i in (12, 13, 14)]].dup_group.nunique() == 3   # not merged


def test_undecodable_image_is_quarantined_not_canonical(run):
    key = run["sc"].by_name["broken"]["key"]
    row = run["silver"].loc[key]
    assert row.hash_error.startswith("undecodable_image") and not row.is_canonical and row.dup_rule is None
    q = run["tables"].read("quarantine").where(f"key = '{key}'").toPandas()
    assert q[["stage", "reason"]].values.tolist() == [["dedupe", "undecodable_image"]]


def test_accounting_adds_up(run):
    r, silver = run["report"], run["silver"]
    assert r.broken() == []
    c = r.counts
    assert c["bronze_rows"] == len(run["sc"].rows) == c["new_rows"]
    assert c["silver_canonical"] == silver.is_canonical.sum()
    assert c["silver_unreadable"] == 1
    assert (c["dup_exact_bytes"], c["dup_exact_pixels"], c["dup_near_text"]) == (1, 1, 1)
    assert c["dup_near_image"] == 7 and c["silver_duplicates"] == 10


def test_rerun_through_the_job_changes_nothing(run):
    """`spark-submit jobs/dedupe.py` (a fresh JVM, as a user runs it) on the same root: nothing new."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    out = subprocess.run([spark_submit, "jobs/dedupe.py", "--config", "conf/local.yaml",
                          "--set", f"paths.root={run['root']}", "--set", "spark.driver_memory=2g",
                          "--set", "spark.shuffle_partitions=2", "--set", "mlflow.enabled=false"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "new_rows" in out.stdout and "MISMATCH" not in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("new_rows"))
    assert line.split()[-1] == "0"
    assert {t: run["tables"].version(t) for t in ("silver", "dedupe_audit")} == run["versions"]


def test_new_rows_join_existing_groups_and_old_rows_do_not_change(run, spark):
    from veclip.dedupe import run_dedupe

    sc, tables, before = run["sc"], run["tables"], run["silver"]
    coco = sorted(glob.glob(str(shared_path("coco-mini", "images") / "*.jpg")))[:3]
    n0 = len(sc.rows)
    sc.copy(20, "resize", None, "recrawl-2.tar")
    big = sc.copy(22, "upscale", sc.rows[22]["alt_text"], "recrawl-2.tar")
    sc.add(sc.by_name["lossless-1"]["image"], None, "recrawl-2.tar", "again-lossless-1", of=sc.rows[1]["key"])
    sc.add(sc.by_name["reencode-0"]["image"], None, "recrawl-2.tar", "again-reencode-0", of=sc.rows[0]["key"])
    a = sc.add(open(coco[0], "rb").read(), "A kitchen with a stove", "coco.tar", "coco-0")
    sc.copy(len(sc.rows) - 1, "watermark", None, "coco.tar")
    sc.add(open(coco[1], "rb").read(), "Two giraffes by a fence", "coco.tar", "coco-1")
    shop = sc.add(open(coco[2], "rb").read(), SHOP, "coco.tar", "coco-2")
    tables.merge("bronze", bronze_frame(spark, sc.rows[n0:]), ["key"])

    report = run_dedupe(run["cfg"], spark)
    after = tables.read("silver").toPandas().set_index("key")
    assert report.counts["new_rows"] == len(sc.rows) - n0 == 8 and report.broken() == []
    cols = ["dup_group", "is_canonical", "dup_rule", "duplicate_of", "deduped_at"]
    assert after.loc[before.index, cols].fillna("-").equals(before[cols].fillna("-"))   # history is stable
    readable = after[after.hash_error.isna()]
    assert partition(readable.dup_group.to_dict()) == partition(
        {k: v for k, v in sc.expected.items() if k in readable.index})
    assert after.dup_group[big["key"]] == sc.rows[22]["key"] and not after.is_canonical[big["key"]]
    assert after.is_canonical[a["key"]] and after.alt_text_low_info[shop["key"]]
    assert report.counts["new_duplicates"] == 5 and report.counts["new_canonical"] == 3


def _planted(spark, rng, n, bits_of):
    """n old random hashes and n new ones, each new one = an old one with the bits `bits_of(i)` flipped."""
    base = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    flips = np.array([sum(1 << int(b) for b in bits_of(i)) for i in range(n)], dtype=np.uint64).view(np.int64)
    near = base ^ flips
    new = spark.createDataFrame([(f"n{i}", int(h)) for i, h in enumerate(near)], "key string, phash long")
    rows = new.selectExpr("key", "phash", "true as is_new").union(spark.createDataFrame(
        [(f"o{i}", int(h), False) for i, h in enumerate(base)], "key string, phash long, is_new boolean"))
    return base, near, new, rows


def test_block_index_finds_every_pair_within_the_guarantee_and_few_others(spark, make_cfg):
    d = make_cfg().dedupe
    rng = np.random.default_rng(7)
    # Worst case for the index: 1-4 flipped bits, each in a block of its own; then 5 in 5 blocks.
    spread = lambda i: rng.choice(8, 1 + i % 5, replace=False) * 8 + rng.integers(0, 8, 1 + i % 5)  # noqa: E731
    base, near, new, rows = _planted(spark, rng, 300, spread)
    assert G.choose_index(new, rows, d)[0] == "exhaustive"          # auto: 300 x 600 comparisons is small
    assert G.choose_index(new, rows, make_cfg("dedupe.exhaustive_max_pairs=1000").dedupe)[0] == "blocks"
    cand, over = G.image_candidates(new, rows, d, "blocks")
    found = {(r.p, r.q): r.q_hub for r in cand.collect()}
    dist = hamming(base, near)
    assert all(found[(int(near[i]), int(base[i]))] == f"o{i}" for i in range(300) if dist[i] <= 4)
    assert not any((int(near[i]), int(base[i])) in found for i in range(300) if dist[i] == 5)
    assert all((int(h), int(h)) in found for h in near)             # each new hash pairs with itself
    others = sum(1 for p, q in found if p != q)
    assert 240 <= others < 240 + 10 and over.count() == 0           # the planted pairs, not all pairs

    # Three new hashes one bit apart share buckets of 3 (collected, not the pair-of-two shortcut).
    trio = [int(base[0]) ^ 1, int(base[0]) ^ 2, int(base[0]) ^ 4]
    t_new = spark.createDataFrame([(f"t{i}", h) for i, h in enumerate(trio)], "key string, phash long")
    t_rows = t_new.selectExpr("key", "phash", "true as is_new").union(rows)
    t_found = {(r.p, r.q) for r in G.image_candidates(t_new, t_rows, d, "blocks")[0].collect()}
    assert all((a, b) in t_found or (b, a) in t_found for a in trio for b in trio + [int(base[0])] if a != b)

    cand, over = G.image_candidates(new, rows, d, "exhaustive")
    found = {(r.p, r.q) for r in cand.collect()}
    assert over is None and len(found) == 300 * 600 and all((int(near[i]), int(base[i])) in found for i in range(300))


def test_hub_buckets_are_paired_in_windows_and_counted(spark):
    from veclip.dedupe.buckets import bucket_pairs, over_cap_counts

    # 1,000 members of one bucket (half new), 3 of another (one new), 2 old ones, a singleton.
    rows = ([("hub", i, i % 2 == 0) for i in range(1000)] + [("small", 5000 + i, i == 0) for i in range(3)]
            + [("old", 0, False), ("old", 1, False), ("alone", 0, True)])
    entries = spark.createDataFrame(rows, "b string, v int, new boolean")
    pairs, over = bucket_pairs(entries, ["b"], ["v", "new"], "new", cap=100)
    got = [(r.l_v, r.l_new, r.r_v, r.r_new) for r in pairs.distinct().collect()]
    assert over_cap_counts(over) == (1, 1000)
    assert all(l_new for _, l_new, _, _ in got)                     # the new member is on the left
    hub = {(min(a, b), max(a, b)) for a, _, b, _ in got if a < 5000}
    assert {(i, i + 1) for i in range(999)} <= hub                  # neighbours in sort order always meet
    assert {(i, i + 50) for i in range(0, 950, 2)} <= hub and (0, 998) not in hub
    assert len(hub) < 1000 * 100                                    # not 1000^2 / 2
    assert {(a, b) for a, _, b, _ in got if a >= 5000} == {(5000, 5001), (5000, 5002)}   # old-old never


def test_components_are_transitive_and_existing_groups_never_bridge(spark):
    e = spark.createDataFrame([("c", "b", None), ("b", "a", None), ("d", "c", None), ("x", "y", None),
                               ("d", "g-old", "G2"), ("a", "h-old", "G1"), ("m", "g-old", "G2"),
                               ("n", "h-old", "G1")], "a string, b string, b_group string")
    got = {r.node: (r.label, r.group) for r in G.attach(e, 10, "test").collect()}
    assert {k: got[k] for k in "abcd"} == {k: ("a", "G1") for k in "abcd"}   # a~b~c~d, touching G1 and G2
    assert got["x"] == got["y"] == ("x", None)
    assert got["m"] == ("m", "G2") and got["n"] == ("n", "G1")                  # not merged through G2/G1


def test_spark_jaccard_matches_the_python_definition(spark):
    from veclip.dedupe.features import jaccard_col
    from veclip.dedupe.text import jaccard

    pairs = [("vintage leather handbag with gold buckle", "vintage leather handbag with silver buckle"),
             ("red square", "red square"), ("seal", "seal in the shallows"), ("a b a b", "a b")]
    got = spark.createDataFrame(pairs, "x string, y string").select(jaccard_col("x", "y", 2).alias("j")).collect()
    assert [r.j for r in got] == pytest.approx([jaccard(x, y, 2) for x, y in pairs])
