"""`spark-submit jobs/caption.py` end to end: SIGKILLed after its first slice (of two) is committed,
rerun, and it finishes with exactly one caption per row, redoing nothing that was committed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests import test_caption as fixture
from tests.conftest import REPO
from veclip.caption.tiny import build_tiny_llava
from veclip.tables import Tables

N_REAL = 6


def command(root, model) -> list[str]:
    spark_submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    return [spark_submit, "--master", "local[1]", str(REPO / "jobs" / "caption.py"),
            "--config", str(REPO / "conf" / "local.yaml"), "--set", f"paths.root={root}",
            "--set", "spark.master=local[1]", "--set", "spark.shuffle_partitions=1", "--set", f"caption.model={model}",
            "--set", "caption.commit_every=4", "--set", "caption.batch_size=4", "--set", "caption.max_new_tokens=4",
            # MLflow's first SQLite setup costs more than the captioning here; the tracking tests cover it.
            "--set", "mlflow.enabled=false"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1"}


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

    done = subprocess.run(command(root, model), capture_output=True, text=True, env=env(), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert int(re.search(r"to_caption\s+(\d+)", done.stdout).group(1)) == len(keys) - len(partial)
    rows = tables.read("captions").toPandas()
    assert sorted(rows["key"]) == sorted(keys.values())  # exactly one row per canonical key
    assert not rows.duplicated(["key", "captioner"]).any()
    errors = rows.set_index("key")["error"]
    assert errors[[keys["truncated.jpg"], keys["garbage.jpg"]]].notna().all()
    assert rows["caption"].notna().sum() == N_REAL
    # Rows captioned before the kill were not redone.
    before = partial.set_index("key")["finished_at"]
    assert (rows.set_index("key").loc[before.index, "finished_at"] == before).all()
