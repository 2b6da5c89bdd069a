"""Training checkpoints: one file per step, written atomically, latest K kept.

    ckpt = Checkpoints("/root/checkpoints/clip-20250101", keep=3)
    ckpt.save(step, {"model": ..., "optimizer": ..., "step": step, ...})   # -> step_00001000.pt
    state = ckpt.load()            # latest readable one (a corrupt one is moved aside), or None
    state = ckpt.load(step=500)

The contract shared with evaluation: a checkpoint is ONE file `<dir>/step_<8-digit step>.pt` holding
torch.save({"model": state_dict, "model_name": str, "optimizer": ..., "step": int, "epoch": int,
"config": dict, ...}); the model rebuilds with `veclip.clip.create(model_name)`. A file is written
under a temporary name and renamed, so a run killed at any moment leaves only complete checkpoints.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional

import torch

from veclip.files import atomic_path

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def latest_checkpoint(folder: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint `step_<8 digits>.pt` in `folder`, or None when it has none."""
    return Checkpoints(folder).latest()


class Checkpoints:
    def __init__(self, folder: str | os.PathLike, keep: int = 3):
        if keep < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}")
        self.folder = Path(folder)
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps that have a complete checkpoint, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))

    def path(self, step: int) -> Path:
        return self.folder / checkpoint_name(step)

    def latest(self) -> Optional[Path]:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, step: int, state: dict) -> Path:
        """Write `state` as the checkpoint of `step` (atomically), then drop all but the latest `keep`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path(step)
        with atomic_path(final) as tmp:  # a reader sees the old state or the whole new file
            torch.save(state, tmp)
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        log.info("checkpoint %s", final)
        return final

    def load(self, step: Optional[int] = None, map_location: str | torch.device = "cpu") -> Optional[dict]:
        """The checkpoint of `step`, or the latest readable one (None when the run has none).

        Without `step`, an unreadable checkpoint (truncated, bit-rotten, not ours) is moved aside as
        `step_<N>.pt.corrupt` with a warning naming it, and the one before is used: a resumed run
        continues from the last good state and writes step N again. Every checkpoint unreadable:
        an error (the files stay there, renamed, for inspection).
        """
        if step is not None:
            path = self.path(step)
            if not path.is_file():
                raise FileNotFoundError(f"no checkpoint for step {step} in {self.folder} (have {self.steps()})")
            return load_file(path, map_location)
        bad: list[str] = []
        for s in reversed(self.steps()):
            path = self.path(s)
            try:
                return load_file(path, map_location)
            except FileNotFoundError:
                continue  # moved aside meanwhile by another rank
            except (MemoryError, PermissionError):
                raise  # the machine's problem, not the file's
            except Exception as err:  # noqa: BLE001 - damaged bytes make torch/pickle raise almost anything
                bad.append(str(path))
                aside = set_aside(path)
                log.warning("checkpoint %s is unreadable (%s: %s); moved to %s, falling back to the one before",
                            path, type(err).__name__, str(err)[:200], aside)
        if bad:
            raise RuntimeError(f"no readable checkpoint in {self.folder}: {bad} unreadable, none older "
                               "(moved aside as *.corrupt)")
        return None


def set_aside(path: Path) -> Optional[Path]:
    """Rename an unreadable checkpoint out of the `step_*.pt` set; None when it is already gone."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    return aside


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read one checkpoint file (ours: plain tensors and Python values, so weights_only loading works)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a training checkpoint (expected a dict with a 'model' state_dict)")
    return state
