"""The train job end to end: spark-submit, 2 ranks through TorchDistributor, MLflow run and registry.

The job runs once for the module (on a gold table of real COCO images); the tests read what it left.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, shared_path
from tests.gold_fixture import coco_rows, write_gold
from veclip.config import load_config
from veclip.tables import Tables

STEPS = 10


@pytest.fixture(scope="module")
def job(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-job")
    cfg = load_config(str(REPO / "conf" / "local.yaml"), [f"paths.root={root}"])
    write_gold(spark, Tables(cfg, spark).location("gold"), coco_rows(shared_path("coco-mini"), max_side=96), files=4)
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "jobs/train.py", "--config", "conf/local.yaml",
           "--set", f"paths.root={root}", "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
           "--set", "train.num_processes=2", "--set", f"train.max_steps={STEPS}", "--set", "train.epochs=5",
           "--set", "train.batch_size=16",
           "--set", "train.checkpoint_every=5", "--set", "train.run_name=job-test"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    return root, proc.stdout


def test_job_trains_two_ranks_and_every_row_is_accounted_for(job):
    root, out = job
    counts = dict(re.findall(r"^  (\w+)\s+([\d,]+)$", out, flags=re.M))
    assert counts["processes"] == "2" and counts["steps"] == str(STEPS) and counts["epochs_completed"] == "2"
    assert counts["epoch_rows_streamed"] == counts["epoch_rows_expected"] == "318"  # 159 rows x 2 epochs
    assert "MISMATCH" not in out and out.count("  OK") == 2
    ckpts = sorted(os.path.basename(p) for p in glob.glob(f"{root}/checkpoints/job-test/step_*.pt"))
    assert ckpts == ["step_00000005.pt", f"step_{STEPS:08d}.pt"]


def test_candidate_model_loads_with_pyfunc_and_embeds_images_and_texts(job):
    import mlflow

    from veclip import clip

    model = mlflow.pyfunc.load_model("models:/veclip-clip@candidate")
    photos = sorted(glob.glob(str(shared_path("coco-mini", "images") / "*.jpg")))[:2]
    images = [open(p, "rb").read() for p in photos]
    out = model.predict(pd.DataFrame({"image": images + [None], "text": ["a train at a station", None, "a cat"]}))
    img = np.array([out["image_embedding"][0], out["image_embedding"][1]])
    assert img.shape == (2, 128) and np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert not np.allclose(img[0], img[1])
    assert out["image_embedding"][2] is None and out["text_embedding"][1] is None
    assert len(out["text_embedding"][2]) == 128
    folder = mlflow.artifacts.download_artifacts("models:/veclip-clip@candidate")
    loaded, _, _ = clip.load(Path(folder) / "artifacts" / "clip")  # the contract with evaluation
    assert sum(p.numel() for p in loaded.parameters()) > 0


def test_run_records_config_gold_version_step_metrics_and_loss_curve(job):
    import mlflow

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("veclip-clip", "candidate")
    run = client.get_run(version.run_id)
    assert run.data.params["train.p_vecap"] == "0.5" and run.data.params["train.resolved.gold_version"] == "0"
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "gold" and '"delta_table_version": "0"' in dataset.dataset.source
    for metric in ("loss", "lr", "logit_scale", "samples_per_s", "data_wait_frac"):
        history = client.get_metric_history(run.info.run_id, f"train/{metric}")
        assert [m.step for m in history] == list(range(1, STEPS + 1)), metric
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/loss_curve.png"]
