"""The train stage as the job runs it: pin gold, train (1..N processes), log and register the model.

    report = run_train(cfg, spark, resume=False)   # resume=True: continue the latest (or the named) run

Reads: the `gold` Delta table at train.gold_version (latest when null; the version is recorded in
the run's run.json, as an MLflow dataset input and as a parameter). Writes: checkpoints under
train.checkpoint_dir (default <paths.checkpoints_dir>/<run name>), metrics and a loss-curve PNG in
the job's MLflow run, and a registered model version with alias `candidate`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING, Optional

import mlflow

from veclip.config import Config
from veclip.report import StageReport
from veclip.train import model_export
from veclip.train.checkpoint import Checkpoints
from veclip.train.data import GoldPlan, plan_gold, shard_files
from veclip.train.launch import latest_run, launch
from veclip.train.logger import Tracking
from veclip.train.loop import TrainSpec

if TYPE_CHECKING:
    from veclip.tables import Tables

log = logging.getLogger(__name__)

# Settings that decide the data order: a resumed run that changes them cannot continue the same way.
ORDER_KEYS = ("model", "seed", "p_vecap", "batch_size", "num_processes", "reader_workers", "shuffle_buffer",
              "image_size", "crop_scale_min")


def resolve_run(cfg: Config, resume: bool) -> tuple[str, Optional[dict]]:
    """(checkpoint directory of this run, its run.json when resuming)."""
    t = cfg.train
    if t.checkpoint_dir or t.run_name:
        folder = t.checkpoint_dir or os.path.join(cfg.paths.checkpoints_dir, t.run_name)
    elif resume:
        folder = latest_run(cfg.paths.checkpoints_dir)
        if folder is None:
            raise FileNotFoundError(f"train --resume: no run under {cfg.paths.checkpoints_dir} to resume "
                                    "(set train.run_name or train.checkpoint_dir)")
    else:
        folder = os.path.join(cfg.paths.checkpoints_dir, dt.datetime.now().strftime("clip-%Y%m%d-%H%M%S"))
    meta_path = os.path.join(folder, "run.json")
    if not resume:
        if Checkpoints(folder).steps():
            raise FileExistsError(f"train: {folder} already holds checkpoints {Checkpoints(folder).steps()}; "
                                  "pass --resume to continue that run, or choose another train.run_name")
        return folder, None
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"train --resume: {folder} is not a training run (no run.json)")
    with open(meta_path) as f:
        return folder, json.load(f)


def pinned_version(cfg: Config, run: Optional[dict]) -> Optional[int]:
    """The gold version to train on: the resumed run's, else train.gold_version (None = latest)."""
    asked = cfg.train.gold_version
    if run is None:
        return asked
    if asked is not None and asked != run["gold_version"]:
        raise ValueError(f"train --resume: the run trained on gold version {run['gold_version']}, "
                         f"but train.gold_version={asked}")
    changed = [k for k in ORDER_KEYS if run["train"].get(k) != getattr(cfg.train, k)]
    if changed:
        log.warning("resuming with changed %s: the data order will differ from the original run", changed)
    return run["gold_version"]


def write_run_meta(folder: str, cfg: Config, plan: GoldPlan) -> None:
    os.makedirs(folder, exist_ok=True)
    meta = {"run_name": os.path.basename(folder), "gold_table": plan.table, "gold_version": plan.version,
            "gold_rows": plan.rows, "train": cfg.train.model_dump(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat()}
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump(meta, f, indent=1)


def log_lineage(tables: Tables, plan: GoldPlan, run_name: str) -> None:
    """The gold table and version as the run's dataset input (MLflow dataset lineage)."""
    digest = hashlib.sha256(f"{plan.table}@{plan.version}".encode()).hexdigest()[:16]
    dataset = mlflow.data.load_delta(**tables.source("gold"), version=str(plan.version), name="gold", digest=digest)
    mlflow.log_input(dataset, context="training")
    mlflow.log_params({"train.resolved.gold_version": plan.version, "train.resolved.gold_rows": plan.rows,
                       "train.resolved.run_name": run_name})


def forwarded_env(mode: str) -> dict:
    """Cluster ranks log to the workspace's MLflow: hand them the driver's MLflow/Databricks settings."""
    if mode != "cluster":
        return {}
    return {k: v for k, v in os.environ.items() if k.startswith(("DATABRICKS_", "MLFLOW_"))}


def run_train(cfg: Config, spark, *, resume: bool = False) -> StageReport:
    from veclip.tables import Tables

    t, report = cfg.train, StageReport("train")
    folder, run = resolve_run(cfg, resume)
    tables = Tables(cfg, spark)
    plan = plan_gold(tables, pinned_version(cfg, run))
    shard_files(plan.files, 1 if t.mode == "single" else t.num_processes)  # fails here, not in every rank
    if run is None:
        write_run_meta(folder, cfg, plan)
    active = mlflow.active_run()
    tracking = None
    if active is not None:
        log_lineage(tables, plan, os.path.basename(folder))
        tracking = Tracking(cfg.mlflow_tracking_uri, active.info.run_id, cfg.mlflow_registry_uri)
    spec = TrainSpec(train=t, plan=plan, checkpoint_dir=folder, summary_path=os.path.join(folder, "summary.json"),
                     resume=resume, tracking=tracking, env=forwarded_env(t.mode))
    summary = launch(spec, t.mode, t.num_processes, t.use_gpu)
    count_summary(report, plan, summary)
    report.details.update({"run": folder, "final checkpoint": summary["final_checkpoint"],
                           "samples/s (steady)": round(summary["samples_per_s"], 1),
                           "data wait (steady)": f"{summary['data_wait_frac']:.1%}"})
    if active is not None:
        report.details["registered"] = publish(cfg, tables, plan, summary, folder)
    return report


def count_summary(report: StageReport, plan: GoldPlan, summary: dict) -> None:
    report.count("gold_rows", plan.rows)
    report.count("gold_version", plan.version)
    report.count("steps", summary["steps"])
    report.count("samples", summary["samples"])
    report.count("processes", summary["world_size"])
    report.count("epochs_completed", len(summary["epochs"]))
    for key in ("rows_expected", "rows_streamed", "rows_trained", "rows_skipped", "rows_unused"):
        report.count(f"epoch_{key}", sum(e[key] for e in summary["epochs"]))
    report.identity("every gold row streamed in every completed epoch", ["epoch_rows_streamed"],
                    ["epoch_rows_expected"])
    report.identity("streamed rows accounted for", ["epoch_rows_streamed"],
                    ["epoch_rows_trained", "epoch_rows_skipped", "epoch_rows_unused"])


def publish(cfg: Config, tables, plan: GoldPlan, summary: dict, folder: str) -> str:
    """Run-level metrics, the loss curve and the registered model (version with alias `candidate`)."""
    mlflow.log_metrics({"train/samples_per_s_steady": summary["samples_per_s"],
                        "train/data_wait_frac_steady": summary["data_wait_frac"]})
    if summary.get("resumed_from") is not None:
        mlflow.set_tag("veclip.train.resumed_from_step", summary["resumed_from"])
    mlflow.log_artifact(model_export.loss_curve(summary["history"], os.path.join(folder, "loss_curve.png")),
                        "plots")
    example = tables.read("gold", plan.version).select("image", "alt_text").limit(1).first()
    version = model_export.export(summary["final_checkpoint"], cfg.train.registered_model,
                                  bytes(example["image"]), example["alt_text"] or "a photo")
    return f"{cfg.train.registered_model} version {version} @{model_export.ALIAS}"
