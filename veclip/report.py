"""What a stage did, in numbers a person can check: counts, the accounting identity, timings.

Every stage returns a `StageReport`; jobs print it and log its counts to MLflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional


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
