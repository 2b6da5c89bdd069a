"""What a stage did, in numbers a person can check: counts, the accounting identity, timings.

Every stage returns a `StageReport`; jobs print it and log its counts to MLflow.
Model stages also call `check_failure_rate` after each slice: a run in which more than
`<stage>.max_failure_rate` of its rows failed (a failure storm: CUDA fault, OOM at batch size 1,
a broken model or decoder) raises `FailureRateExceeded`, so the job exits non-zero and the
pipeline stops before gold, instead of balancing its accounting with error rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

# Mid-run checks wait for this many rows of evidence; the check at the end of a run always applies.
FAILURE_CHECK_MIN_ROWS = 1000


@dataclass
class StageReport:
    stage: str
    counts: dict[str, int] = field(default_factory=dict)
    identities: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, object] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def identity(self, label: str, left: list[str], right: list[str]) -> None:
        """Declare that sum(counts[left]) must equal sum(counts[right]) (e.g. read = bronze + quarantine)."""
        self.identities.append((label, left, right))

    def broken(self) -> list[str]:
        out = []
        for label, left, right in self.identities:
            lv = sum(self.counts.get(k, 0) for k in left)
            rv = sum(self.counts.get(k, 0) for k in right)
            if lv != rv:
                out.append(f"{label}: {' + '.join(left)} = {lv} but {' + '.join(right)} = {rv}")
        return out

    def finish(self) -> "StageReport":
        self.seconds = time.monotonic() - self._t0
        return self

    def metrics(self, prefix: Optional[str] = None) -> dict[str, float]:
        p = f"{prefix or self.stage}."
        out = {p + k: float(v) for k, v in self.counts.items()}
        out[p + "seconds"] = round(self.seconds, 3)
        return out

    def format(self) -> str:
        width = max([len(k) for k in self.counts] + [10])
        lines = [f"== {self.stage}: {self.seconds:.1f}s =="]
        lines += [f"  {k:<{width}}  {v:>10,}" for k, v in self.counts.items()]
        for label, left, right in self.identities:
            lv = sum(self.counts.get(k, 0) for k in left)
            rv = sum(self.counts.get(k, 0) for k in right)
            mark = "OK" if lv == rv else "MISMATCH"
            lines.append(f"  check {label}: {' + '.join(left)} ({lv:,}) = {' + '.join(right)} ({rv:,})  {mark}")
        for k, v in self.details.items():
            lines.append(f"  {k}: {v}")
        return "\n".join(lines)


class FailureRateExceeded(RuntimeError):
    """More of this run's rows failed than `<stage>.max_failure_rate` allows. `report`: the counts so far."""

    def __init__(self, message: str, report: Optional[StageReport] = None):
        super().__init__(message)
        self.report = report


def failure_rate_exceeded(failed: int, processed: int, max_rate: float) -> bool:
    """True when failed / processed is above max_rate (never for a run that processed nothing)."""
    return processed > 0 and failed > max_rate * processed


def check_failure_rate(report: StageReport, failed: int, processed: int, max_rate: float, final: bool,
                       errors: Optional[Mapping[str, int]] = None) -> None:
    """Raise FailureRateExceeded when `failed` of the `processed` rows of this run exceed `max_rate`.

    Mid-run (`final=False`) the check waits for FAILURE_CHECK_MIN_ROWS rows, so a storm stops the
    job after about one slice, not after the whole crawl. The failed rows are already committed as
    error rows: `--retry-errors` redoes them once the cause is fixed. `report` (this run's counts so
    far) travels with the exception; `errors`: failed rows by error type, for the message.
    """
    if not final and processed < FAILURE_CHECK_MIN_ROWS:
        return
    if not failure_rate_exceeded(failed, processed, max_rate):
        return
    top = ", ".join(f"{k} x{v}" for k, v in sorted((errors or {}).items(), key=lambda kv: -kv[1])[:3])
    raise FailureRateExceeded(
        f"{report.stage}: {failed:,} of the {processed:,} rows of this run failed ({failed / processed:.0%}), "
        f"more than {report.stage}.max_failure_rate={max_rate:g}" + (f"; errors: {top}" if top else "") +
        f". The failed rows are kept as error rows in the table; fix the cause, then rerun with "
        f"--retry-errors (or raise {report.stage}.max_failure_rate).", report.finish())
