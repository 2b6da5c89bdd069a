"""Progress for long work: done/total, rate and time left, printed at most every few seconds.

    with SparkProgress(spark, "caption"):      # Spark tasks of whatever runs inside
        df.write...
    p = Progress(total=steps, label="train", unit="step")
    for ...: p.update(1)
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional


def _eta(done: float, total: Optional[float], elapsed: float) -> str:
    if not total or done <= 0:
        return "?"
    left = elapsed / done * max(total - done, 0)
    return time.strftime("%H:%M:%S", time.gmtime(left))


class Progress:
    def __init__(self, total: Optional[int], label: str, unit: str = "rows", every_s: float = 10.0, stream=None):
        self.total, self.label, self.unit, self.every_s = total, label, unit, every_s
        self.done = 0
        self.stream = stream or sys.stderr
        self._t0 = self._last = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total:,}" if self.total else ""
        return (f"[{self.label}] {self.done:,}{of} {self.unit}  {rate:,.1f} {self.unit}/s  "
                f"elapsed {elapsed:,.0f}s  left {_eta(self.done, self.total, elapsed)}")

    def update(self, n: int = 1, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if force or now - self._last >= self.every_s or (self.total and self.done >= self.total):
            self._last = now
            print(self.line(), file=self.stream, flush=True)


class SparkProgress:
    """Reports the tasks of the Spark stages that run inside the `with` block, from a daemon thread."""

    def __init__(self, spark, label: str, every_s: float = 10.0, stream=None):
        self.tracker = spark.sparkContext.statusTracker()
        self.label, self.every_s = label, every_s
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def snapshot(self) -> tuple[int, int]:
        done = total = 0
        for sid in self.tracker.getActiveStageIds():
            info = self.tracker.getStageInfo(sid)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        return done, total

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            done, total = self.snapshot()
            if total:
                elapsed = time.monotonic() - self._t0
                print(f"[{self.label}] tasks {done}/{total} of active stages, elapsed {elapsed:,.0f}s",
                      file=self.stream, flush=True)

    def __enter__(self) -> "SparkProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
