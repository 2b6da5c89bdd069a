"""Streaming a pinned gold version with petastorm, and resuming a killed training run exactly.

One gold table (real COCO images and captions) is written once for the module: version 0 holds 120
rows in 4 files, version 1 appends 39 more in one file.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import pytest
import torch

from tests.conftest import REPO, shared_path
from tests.gold_fixture import coco_rows, write_gold
from veclip.config import load_config
from veclip.config.train import TrainConfig
from veclip.tables import Tables
from veclip.train import data
from veclip.train.checkpoint import Checkpoints
from veclip.train.loop import TrainSpec


@pytest.fixture(scope="module")
def gold(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-root")
    cfg = load_config(str(REPO / "conf" / "local.yaml"), [f"paths.root={root}", "spark.shuffle_partitions=2"])
    tables = Tables(cfg, spark)
    rows = coco_rows(shared_path("coco-mini"), max_side=96)
    write_gold(spark, tables.location("gold"), rows[:120], files=4)
    write_gold(spark, tables.location("gold"), rows[120:], files=1, mode="append")
    return {"tables": tables, "rows": rows, "v0": data.plan_gold(tables, 0), "latest": data.plan_gold(tables)}


def settings(pool="dummy", workers=2, batch=16, buffer=32):
    t = TrainConfig(model="veclip-tiny", p_vecap=0.5, seed=0, batch_size=batch, shuffle_buffer=buffer,
                    reader_pool=pool, reader_workers=workers)
    return data.StreamSettings.from_config(t, image_size=64, context_length=77)


def read_epochs(files, s, rank=0, epochs=1):
    """[(keys trained in order, counts)] per epoch, for one rank."""
    stream = data.RankStream(files, s, rank=rank)
    out = []
    try:
        for e in range(epochs):
            reader, keys = stream.epoch(e), []
            while (batch := reader.next_batch()) is not None:
                keys += batch.keys
            out.append((keys, reader.finish()))
    finally:
        stream.close()
    return out


def test_plan_pins_a_version_and_counts_its_rows(gold):
    v0, latest = gold["v0"], gold["latest"]
    assert (v0.version, v0.rows, len(v0.files)) == (0, 120, 4)
    assert (latest.version, latest.rows, len(latest.files)) == (1, 159, 5)
    assert set(f.url for f in v0.files) < set(f.url for f in latest.files)
    assert all(f.url.startswith("file:///") for f in v0.files)


def test_two_ranks_stream_every_row_once_per_epoch(gold):
    plan = gold["v0"]
    shards = data.shard_files(plan.files, 2)
    seen, epochs = Counter(), {}
    for rank in (0, 1):
        for keys, counts in read_epochs(shards[rank], settings(), rank=rank, epochs=2):
            counts.check(rank, plan.table, plan.version)
            epochs.setdefault(counts.epoch, []).append((keys, counts))
            seen.update((counts.epoch, k) for k in keys)
    assert max(seen.values()) == 1  # no row twice within an epoch, across both ranks
    for e, parts in epochs.items():
        assert sum(c.rows_streamed for _, c in parts) == plan.rows == 120
        assert sum(c.rows_trained + c.rows_unused for _, c in parts) == 120 and all(c.rows_skipped == 0 for _, c in parts)
    assert epochs[0][0][0] != epochs[1][0][0]  # reshuffled each epoch


def test_process_pool_streams_the_same_order_as_the_dummy_pool(gold):
    files = data.shard_files(gold["latest"].files, 1)[0]
    dummy = read_epochs(files, settings("dummy", workers=2, batch=32, buffer=64))
    process = read_epochs(files, settings("process", workers=2, batch=32, buffer=64))
    assert dummy[0][0] == process[0][0] and len(process[0][0]) == 4 * 32
    assert process[0][1].rows_streamed == 159


def test_a_row_group_shorter_than_the_table_says_is_an_error(gold):
    files = list(data.shard_files(gold["v0"].files, 1)[0])
    files[1] = replace(files[1], row_groups=(files[1].rows + 1,))  # the table says one row more
    with pytest.raises(data.GoldDataError, match=rf"row group 0 of {files[1].url} came with {files[1].rows - 1} "
                       rf"rows, the table version says {files[1].rows}"):
        read_epochs(files, settings(workers=1))


def test_deletion_vectors_are_refused(gold, spark):
    tables = gold["tables"]
    cfg = tables.cfg.model_copy(update={"tables": tables.cfg.tables.model_copy(update={"prefix": "dv_"})})
    dv = Tables(cfg, spark)
    write_gold(spark, dv.location("gold"), gold["rows"][:20], files=1)
    spark.sql(f"ALTER TABLE delta.`{dv.location('gold')}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = true)")
    spark.sql(f"DELETE FROM delta.`{dv.location('gold')}` WHERE key = '{gold['rows'][0]['key']}'")
    with pytest.raises(data.GoldDataError, match="has 19 rows but its 1 Parquet files hold 20"):
        data.plan_gold(dv)


# -- kill and resume ----------------------------------------------------------------------------
STEPS = 24


def spec_file(tmp_path, plan, name, pool, resume=False):
    cfg = TrainConfig(model="veclip-tiny", batch_size=16, lr=1e-3, warmup_steps=4, epochs=10, max_steps=STEPS,
                      checkpoint_every=4, keep_checkpoints=2, shuffle_buffer=32, reader_pool=pool,
                      reader_workers=1, mode="single", seed=3)
    run = tmp_path / name
    spec = TrainSpec(cfg, plan, str(run / "ckpt"), str(run / "summary.json"), resume=resume)
    path = tmp_path / f"{name}-{int(resume)}.pkl"
    path.write_bytes(pickle.dumps(spec))
    return path, Checkpoints(run / "ckpt")


def start(spec_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import pickle, sys; from veclip.train.loop import train_worker; train_worker(pickle.load(open(sys.argv[1], 'rb')))"
    return subprocess.Popen([sys.executable, "-c", code, str(spec_path)], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]


def test_a_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(gold, tmp_path):
    plan = gold["v0"]
    whole_spec, whole = spec_file(tmp_path, plan, "whole", "dummy")
    killed_spec, killed = spec_file(tmp_path, plan, "killed", "process")
    uninterrupted = start(whole_spec)  # runs alongside: its imports overlap the other's
    proc = start(killed_spec)
    deadline = time.monotonic() + 600
    while not any(s >= 8 for s in killed.steps()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the process and its petastorm workers, as when a machine dies
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = killed.steps()
    assert at_kill and 8 <= at_kill[-1] < STEPS, f"not killed mid-run: checkpoints {at_kill}"

    finish(uninterrupted)
    finish(start(spec_file(tmp_path, plan, "killed", "dummy", resume=True)[0]))  # the pool is no part of the order

    a, b = whole.load(), killed.load()
    assert a["step"] == b["step"] == STEPS and a["epoch"] == b["epoch"]
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor, b["model"][name], atol=1e-5), name
    moved = sum((tensor - whole.load(step=whole.steps()[0])["model"][n]).abs().sum() for n, tensor in a["model"].items())
    assert moved > 0  # training changed the weights after the earlier checkpoint


def test_resume_falls_back_past_a_corrupt_latest_checkpoint_and_ends_with_the_same_weights(gold, tmp_path):
    plan = gold["v0"]
    first, ckpts = spec_file(tmp_path, plan, "corrupt", "dummy")
    finish(start(first))
    assert ckpts.steps() == [STEPS - 4, STEPS]
    done = ckpts.load()
    latest = ckpts.path(STEPS)
    latest.write_bytes(latest.read_bytes()[:4096])  # the last checkpoint lost its tail
    proc = start(spec_file(tmp_path, plan, "corrupt", "dummy", resume=True)[0])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert f"checkpoint {latest} is unreadable" in err.decode()  # the warning names the bad file
    summary = json.loads((tmp_path / "corrupt" / "summary.json").read_text())
    assert summary["resumed_from"] == STEPS - 4 and summary["steps"] == STEPS
    again = ckpts.load()  # step STEPS written again, from the good checkpoint before it
    assert again["step"] == STEPS and (tmp_path / "corrupt" / "ckpt" / f"step_{STEPS:08d}.pt.corrupt").is_file()
    for name, tensor in done["model"].items():
        assert torch.allclose(tensor, again["model"][name], atol=1e-5), name
