"""`spark-submit jobs/caption.py` SIGKILLed after its first slice (of two) is committed, then rerun:
it finishes with exactly one caption per row, redoing nothing that was committed.

The rerun goes through the same stage function in this test session's Spark (a second spark-submit
would add a JVM start and two torch imports, a minute or more on a small machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests import test_caption as fixture
from tests.conftest import REPO
from veclip.caption.stage import run_caption
from veclip.caption.tiny import build_tiny_llava
from veclip.config import load_config
from veclip.tables import Tables

N_REAL = 6


def overrides(root, model) -> list[str]:
    return [f"paths.root={root}", "spark.master=local[1]", "spark.shuffle_partitions=1", f"caption.model={model}",
            "caption.commit_every=4", "caption.batch_size=4", "caption.max_new_tokens=4",
            # MLflow's first SQLite setup costs more than the captioning here; the tracking tests cover it.
            "mlflow.enabled=false"]


def command(root, model) -> list[str]:
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    sets = [arg for o in overrides(root, model) for arg in ("--set", o)]
    return [spark_submit, "--master", "local[1]", str(REPO / "jobs" / "caption.py"),
            "--config", str(REPO / "conf" / "local.yaml"), *sets]


def env() -> dict:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def kill_after_first_slice(cmd, root, timeout_s: float = 400) -> tuple[int, str]:
    """Start the job in its own process group; SIGKILL the group once the first slice is committed."""
    first_slice = root / "captions" / "_delta_log" / f"{1:020d}.json"  # v0 creates the table, v1 = slice 1
    log_path = root.parent / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and not first_slice.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    return rc, log_path.read_text()


def test_killed_job_resumes_with_exactly_one_caption_per_row(spark, make_cfg, cc12m_shard, tmp_path):
    cfg = make_cfg()
    tables = Tables(cfg, spark)
    keys = fixture.write_bronze(spark, tables, cc12m_shard, n_real=N_REAL)
    model = build_tiny_llava(str(tmp_path / "tiny-llava"))
    root = tmp_path / "root"

    rc, out = kill_after_first_slice(command(root, model), root)
    assert rc == -signal.SIGKILL, f"the job was not killed mid-run (rc {rc}):\n{out[-3000:]}"
    partial = tables.read("captions").toPandas()
    assert 0 < len(partial) < len(keys), "the kill should leave some, not all, captions"

    cfg = load_config(str(REPO / "conf" / "local.yaml"), overrides(root, model))
    report = run_caption(cfg, spark, retry_errors=False)
    assert report.broken() == []
    assert (report.counts["already_done"], report.counts["to_caption"]) == (len(partial), len(keys) - len(partial))
    rows = tables.read("captions").toPandas()
    assert sorted(rows["key"]) == sorted(keys.values())  # exactly one row per canonical key
    assert not rows.duplicated(["key", "captioner"]).any()
    errors = rows.set_index("key")["error"]
    assert errors[[keys["truncated.jpg"], keys["garbage.jpg"]]].notna().all()
    assert rows["caption"].notna().sum() == N_REAL
    # Rows captioned before the kill were not redone.
    before = partial.set_index("key")["finished_at"]
    assert (rows.set_index("key").loc[before.index, "finished_at"] == before).all()
