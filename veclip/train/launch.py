"""Run the train function on 1..N processes: in this process, or through TorchDistributor.

    summary = launch(spec, mode="local", num_processes=2, use_gpu=False)

- `single`: `train_worker(spec)` in this process (world size 1): for debugging.
- `local`: TorchDistributor(local_mode=True) starts `num_processes` ranks with torchrun on this
  machine (gloo on CPU, nccl with one GPU per process).
- `cluster`: TorchDistributor(local_mode=False) runs the ranks as Spark tasks on the workers
  (Databricks); the checkpoint directory must be a path all of them reach (a Volume).
The result is read from the summary file rank 0 writes: TorchDistributor returns the value of the
rank that finished last, which need not be rank 0.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

from veclip.train.loop import TrainSpec, train_worker

log = logging.getLogger(__name__)


def launch(spec: TrainSpec, mode: str, num_processes: int = 1, use_gpu: bool = False) -> dict:
    """Train and return rank 0's summary; raises when training failed or wrote no summary."""
    if os.path.exists(spec.summary_path):
        os.remove(spec.summary_path)
    if mode == "single":
        if num_processes != 1:
            raise ValueError(f"train.mode=single runs one process, not {num_processes}")
        train_worker(spec)
    elif mode in ("local", "cluster"):
        from pyspark.ml.torch.distributor import TorchDistributor

        log.info("TorchDistributor: %d process(es), %s mode, %s", num_processes, mode, "GPU" if use_gpu else "CPU")
        TorchDistributor(num_processes=num_processes, local_mode=(mode == "local"),
                         use_gpu=use_gpu).run(train_worker, spec)
    else:
        raise ValueError(f"train.mode must be single, local or cluster, got {mode!r}")
    return read_summary(spec.summary_path)


def read_summary(path: str) -> dict:
    if not os.path.exists(path):
        raise RuntimeError(f"training finished without a summary at {path}: rank 0 did not complete")
    with open(path) as f:
        return json.load(f)


def latest_run(checkpoints_root: str) -> Optional[str]:
    """The most recently started run directory under `checkpoints_root` (one holding run.json)."""
    if not os.path.isdir(checkpoints_root):
        return None
    runs = [os.path.join(checkpoints_root, d) for d in os.listdir(checkpoints_root)
            if os.path.isfile(os.path.join(checkpoints_root, d, "run.json"))]
    return max(runs, key=lambda d: os.path.getmtime(os.path.join(d, "run.json")), default=None)
