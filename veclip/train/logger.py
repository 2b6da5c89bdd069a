"""Training metrics: rank 0 sends them to the job's MLflow run, buffered, and prints progress.

    log = MetricsLogger(Tracking(uri, run_id), total_steps=1000)   # rank 0 only; None target = no MLflow
    log.step(12, {"loss": 3.1, "lr": 1e-4})
    log.close()

Ranks run in other processes (torchrun) than the job's driver, so the logger writes to the run by id
through an MlflowClient rather than through the driver's active run. Every step's values are kept
(with their step number); they are sent in batches to keep the tracking store off the step time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

from veclip.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracking:
    tracking_uri: str
    run_id: str
    registry_uri: Optional[str] = None


class MetricsLogger:
    def __init__(self, target: Optional[Tracking], total_steps: int, every: int = 1,
                 flush_every_s: float = 10.0, progress_every_s: float = 10.0):
        self.target, self.every, self.flush_every_s = target, every, flush_every_s
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._pending: list = []
        self._last_flush = time.monotonic()
        # The progress line is printed when this logger says so, together with the latest metrics.
        self._progress = Progress(total=total_steps, label="train", unit="steps", every_s=float("inf"))
        self.progress_every_s = progress_every_s
        self._last_print = time.monotonic()
        self._client = None
        if target is not None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.registry_uri)

    def step(self, step: int, values: dict[str, float], done_steps: int = 1) -> None:
        """Record the metrics of `step` (every `every` steps); advance the progress line."""
        if step % self.every == 0:
            for k, v in values.items():
                self.history.setdefault(k, []).append((step, float(v)))
            if self._client is not None:
                from mlflow.entities import Metric

                ts = int(time.time() * 1000)
                self._pending += [Metric(f"train/{k}", float(v), ts, step) for k, v in values.items()]
                if len(self._pending) >= 500 or time.monotonic() - self._last_flush >= self.flush_every_s:
                    self.flush()
        due = time.monotonic() - self._last_print >= self.progress_every_s
        self._progress.update(done_steps, force=due)
        if due:
            self._last_print = time.monotonic()
            log.info("step %d: %s", step, "  ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def flush(self) -> None:
        if self._client is not None and self._pending:
            for i in range(0, len(self._pending), 1000):  # MLflow's log_batch limit
                self._client.log_batch(self.target.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
