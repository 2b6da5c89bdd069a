"""The user path: `spark-submit jobs/ingest.py` on the real CC12M shard, then re-runs and a new shard.

One `spark-submit` subprocess (a fresh JVM, as a user runs it); the re-runs use the test session on
the same tables: the job and the library must agree.
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile

import deltalake
import pytest

from tests.conftest import REPO
from tests.crawlgen import real_images, write_shard


def _env():
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


@pytest.fixture(scope="module")
def job(spark, cc12m_shard, tmp_path_factory):
    from veclip.config import load_config
    from veclip.ingest.stage import run_ingest

    tmp = tmp_path_factory.mktemp("ingest-cli")
    root = tmp / "root"
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    cmd = [spark_submit, "jobs/ingest.py", "--config", "conf/local.yaml",
           "--set", f"paths.root={root}", "--set", f"ingest.inputs={cc12m_shard}",
           "--set", "spark.driver_memory=2g", "--set", "spark.shuffle_partitions=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)

    base = [f"paths.root={root}", "spark.master=local[2]", "spark.shuffle_partitions=2"]
    cfg = load_config(str(REPO / "conf" / "local.yaml"), base + [f"ingest.inputs={cc12m_shard}"])
    rerun = run_ingest(cfg, spark)
    # A new shard: 4 samples already ingested (same URLs) and 4 new ones; the old shard read again too.
    photos = real_images(cc12m_shard)
    samples = [(f"n{i}", {"jpg": data, "txt": alt.encode(),
                          "json": json.dumps({"url": url if i < 4 else f"{url}#copy{i}"}).encode()})
               for i, (url, alt, data) in enumerate(photos[:8])]
    write_shard(tmp / "new.tar", samples)
    cfg2 = load_config(str(REPO / "conf" / "local.yaml"),
                       base + [f"ingest.inputs=[{cc12m_shard}, {tmp / 'new.tar'}]", "ingest.skip_ingested_files=false"])
    more = run_ingest(cfg2, spark)
    return dict(proc=proc, root=root, rerun=rerun, more=more, photos=photos)


def test_spark_submit_ingests_the_32_pairs(job, cc12m_shard):
    proc = job["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = proc.stdout
    for line in ("read                        32", "bronze                      32", "quarantine                   0"):
        assert line in out, out
    assert "check read = bronze + quarantine + already_present + duplicate_in_input" in out and "MISMATCH" not in out
    bronze = deltalake.DeltaTable(str(job["root"] / "bronze"), version=0).to_pandas()   # as the job left it
    assert len(bronze) == 32
    with tarfile.open(cc12m_shard) as tf:
        metas = [json.loads(tf.extractfile(m).read()) for m in tf.getmembers() if m.name.endswith(".json")]
    assert sorted(bronze.key) == sorted(hashlib.sha256(m["url"].encode()).hexdigest() for m in metas)
    by_url = bronze.set_index("url")
    for m in metas:
        row = by_url.loc[m["url"]]
        assert (row.width, row.height, row.source_key) == (m["width"], m["height"], m["key"])
        assert row.alt_text_raw == m["caption"] and row.source == str(cc12m_shard)
    assert (bronze.image.map(lambda b: hashlib.sha256(b).hexdigest()) == bronze.image_sha256).all()
    assert bronze.alt_text.str.contains("<PERSON>", regex=False).any()       # CC12M's placeholder survives
    assert len(deltalake.DeltaTable(str(job["root"] / "quarantine")).to_pandas()) == 0   # created, empty


def test_rerun_adds_nothing(job):
    r = job["rerun"]
    assert r.broken() == []
    assert (r.counts["files_skipped"], r.counts["read"], r.counts["bronze"], r.counts["quarantine"]) == (1, 0, 0, 0)


def test_new_shard_ingests_only_itself(job):
    r = job["more"]
    assert r.broken() == []
    c = r.counts
    assert (c["read"], c["bronze"], c["quarantine"], c["already_present"]) == (40, 4, 0, 36)
    bronze = deltalake.DeltaTable(str(job["root"] / "bronze")).to_pandas(columns=["key", "source"])
    assert len(bronze) == 36 and (bronze.source.str.endswith("new.tar")).sum() == 4


def test_bad_config_is_refused_before_spark_starts():
    proc = subprocess.run([sys.executable, "jobs/ingest.py", "--set", "ingest.min_sid=3"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown key 'ingest.min_sid'" in proc.stderr
