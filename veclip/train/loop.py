"""The training loop, top to bottom: setup -> data -> model -> optimizer -> resume -> steps -> checkpoints.

    train_worker(spec)     # what every rank runs (TorchDistributor ships it; also called directly)

`train_worker` is a top-level function of a picklable `TrainSpec`; it reads its rank and the world
size from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), and without them it is a
single process (world size 1). gloo on CPU, nccl on GPUs (bf16 autocast there, fp32 on CPU).
Only rank 0 writes: checkpoints, MLflow metrics and the run summary (a JSON file the job reads:
TorchDistributor returns the value of whichever rank finished last, not rank 0's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

from veclip.config.train import TrainConfig
from veclip.files import write_text_atomic
from veclip.train import data, optim
from veclip.train.checkpoint import Checkpoints
from veclip.train.logger import MetricsLogger, Tracking
from veclip.train.model import Built, build, load_weights

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the learned temperature at 100


@dataclass(frozen=True)
class TrainSpec:
    """Everything a rank needs, built by the job's driver (picklable: it is sent to the ranks)."""
    train: TrainConfig
    plan: data.GoldPlan
    checkpoint_dir: str
    summary_path: str
    resume: bool = False
    tracking: Optional[Tracking] = None
    env: dict = field(default_factory=dict)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class Position:
    step: int = 0                  # optimizer steps done
    epoch: int = 0                 # epoch in progress
    epoch_batches: int = 0         # batches of that epoch already trained


def setup(cfg: TrainConfig) -> Dist:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if cfg.use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("train.use_gpu is true but this process sees no GPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # Share the cores between the ranks of this machine, unless OMP_NUM_THREADS says otherwise.
        threads = os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(int(threads) if threads else max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.use_gpu else "gloo")
    return Dist(rank, world, local_rank, device)


def all_have(batch: Optional[data.Batch], d: Dist) -> bool:
    """True when every rank has a batch: ranks must take the same number of steps or DDP hangs."""
    if d.world == 1:
        return batch is not None
    flag = torch.tensor([int(batch is not None)], device=d.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def total_steps(cfg: TrainConfig, shards: list) -> int:
    planned = cfg.epochs * data.steps_per_epoch(shards, cfg.batch_size)
    return min(planned, cfg.max_steps) if cfg.max_steps else planned


def checkpoint_state(cfg: TrainConfig, model: torch.nn.Module, opt, pos: Position, built: Built,
                     plan: data.GoldPlan, world: int) -> dict:
    return {"model": model.state_dict(), "model_name": cfg.model, "optimizer": opt.state_dict(),
            "step": pos.step, "epoch": pos.epoch, "epoch_batches": pos.epoch_batches,
            "config": cfg.model_dump(), "image_size": built.image_size, "world_size": world,
            "gold": {"table": plan.table, "version": plan.version}, "rng": torch.get_rng_state()}


def restore(state: dict, model: torch.nn.Module, opt, d: Dist, model_name: str) -> Position:
    if state.get("model_name") != model_name:
        raise ValueError(f"train --resume: the checkpoint holds a {state.get('model_name')} model, "
                         f"train.model is {model_name}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if state.get("world_size", d.world) != d.world:
        log.warning("resuming a run of %s processes with %s: ranks read other files, the data order differs",
                    state["world_size"], d.world)
    return Position(state["step"], state["epoch"], state["epoch_batches"])


def train_step(model, loss_fn, opt, batch: data.Batch, lr: float, cfg: TrainConfig, d: Dist,
               mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float]:
    """One optimizer step on one batch; returns (loss, logit scale)."""
    images = (batch.images.to(d.device, non_blocking=True).float().div_(255) - mean) / std
    tokens = batch.tokens.to(d.device, non_blocking=True)
    optim.set_lr(opt, lr)
    opt.zero_grad(set_to_none=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        out = model(images, tokens)
        feats = (out["image_features"], out["text_features"], out["logit_scale"]) if isinstance(out, dict) else out[:3]
        # Every rank gathers all ranks' features, so the loss is the same on each: no all-reduce needed.
        loss = loss_fn(*feats)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    inner = model.module if hasattr(model, "module") else model
    with torch.no_grad():
        inner.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return float(loss.detach()), float(feats[2].detach())


class Trainer:
    """One rank's training run. `train()` runs it and returns rank 0's summary (other ranks: None)."""

    def __init__(self, spec: TrainSpec):
        from open_clip.loss import ClipLoss
        from torch.nn.parallel import DistributedDataParallel

        self.spec, self.cfg = spec, spec.train
        cfg = self.cfg
        self.d = d = setup(cfg)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and in every rerun
        self.built = build(cfg.model, cfg.image_size)
        if cfg.pretrained:
            load_weights(self.built.model, cfg.pretrained)
        self.model = self.built.model.to(d.device)
        self.opt = optim.adamw(self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps)
        self.ckpts = Checkpoints(spec.checkpoint_dir, cfg.keep_checkpoints)
        state = self.ckpts.load() if spec.resume else None
        self.pos = restore(state, self.model, self.opt, d, cfg.model) if state else Position()
        self.resumed_from = self.pos.step if state else None
        ids = [d.device.index] if d.device.type == "cuda" else None
        self.net = DistributedDataParallel(self.model, device_ids=ids) if d.world > 1 else self.model
        self.loss_fn = ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=True,
                                rank=d.rank, world_size=d.world)
        self.mean = torch.tensor(self.built.mean, device=d.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.built.std, device=d.device).view(1, 3, 1, 1)
        self.shards = data.shard_files(spec.plan.files, d.world)
        self.total = total_steps(cfg, self.shards)      # for the LR schedule and progress
        self.limit = cfg.max_steps or math.inf          # epochs end when a rank runs out of batches
        self.logger = MetricsLogger(spec.tracking, self.total, cfg.log_every) if d.main else None
        self.epochs: list[dict] = []
        self.rates: list[tuple[float, float, int]] = []  # (step seconds, data-wait seconds, samples)

    def stream(self) -> data.RankStream:
        cfg, b = self.cfg, self.built
        settings = data.StreamSettings.from_config(cfg, b.image_size, b.context_length)
        return data.RankStream(self.shards[self.d.rank], settings, self.d.rank, start_epoch=self.pos.epoch)

    def train(self) -> Optional[dict]:
        t0 = time.monotonic()
        if self.pos.step < self.limit and self.pos.epoch < self.cfg.epochs:
            stream = self.stream()
            try:
                while self.pos.step < self.limit and self.pos.epoch < self.cfg.epochs:
                    self.run_epoch(stream.epoch(self.pos.epoch))
            finally:
                stream.close()
        if self.d.main:
            if self.pos.step not in self.ckpts.steps():
                self.save()
            self.logger.close()
        return self.summary(time.monotonic() - t0) if self.d.main else None

    def run_epoch(self, reader: data.EpochReader) -> None:
        for _ in range(self.pos.epoch_batches):  # resuming mid-epoch: replay the batches already trained
            if reader.next_batch() is None:
                break
        while self.pos.step < self.limit:
            t0 = time.perf_counter()
            batch = reader.next_batch()
            if not all_have(batch, self.d):
                break
            waited = time.perf_counter() - t0
            self.step(batch, t0, waited)
        else:
            return  # stopped by max_steps in the middle of an epoch: nothing more to count
        counts = reader.finish()
        counts.check(self.d.rank, self.spec.plan.table, self.spec.plan.version)
        self.epochs.append(self.epoch_totals(counts))
        self.pos = Position(self.pos.step, self.pos.epoch + 1, 0)

    def step(self, batch: data.Batch, t0: float, waited: float) -> None:
        cfg = self.cfg
        lr = optim.lr_at(self.pos.step, cfg.lr, cfg.warmup_steps, self.total)
        loss, scale = train_step(self.net, self.loss_fn, self.opt, batch, lr, cfg, self.d, self.mean, self.std)
        self.pos = Position(self.pos.step + 1, self.pos.epoch, self.pos.epoch_batches + 1)
        seconds = time.perf_counter() - t0
        samples = len(batch.tokens) * self.d.world
        self.rates.append((seconds, waited, samples))
        if self.d.main:
            self.logger.step(self.pos.step, {
                "loss": loss, "lr": lr, "logit_scale": scale, "samples_per_s": samples / seconds,
                "data_wait_frac": waited / seconds, "vecap_frac": batch.vecap / len(batch.tokens),
                "epoch": self.pos.epoch})
            if self.pos.step % cfg.checkpoint_every == 0:
                self.save()

    def save(self) -> None:
        self.ckpts.save(self.pos.step, checkpoint_state(self.cfg, self.model, self.opt, self.pos, self.built,
                                                         self.spec.plan, self.d.world))

    def epoch_totals(self, counts: data.EpochCounts) -> dict:
        """This epoch's row counts summed over ranks (every rank must call it)."""
        keys = ["rows_expected", "rows_streamed", "rows_trained", "rows_skipped", "rows_unused"]
        values = torch.tensor([getattr(counts, k) for k in keys], dtype=torch.long, device=self.d.device)
        if self.d.world > 1:
            dist.all_reduce(values)
        out = {"epoch": counts.epoch, **dict(zip(keys, values.tolist()))}
        if counts.skipped_keys:
            log.warning("epoch %d rank %d skipped %d rows (no decodable image or no text), e.g. %s",
                        counts.epoch, self.d.rank, counts.rows_skipped, counts.skipped_keys[:5])
        return out

    def summary(self, seconds: float) -> dict:
        """What the job reports and logs; rates leave out the first steps (start-up, first row groups)."""
        steady = self.rates[min(len(self.rates) // 5, 5):] or self.rates
        step_s = sum(r[0] for r in steady)
        latest = self.ckpts.latest()
        return {
            "steps": self.pos.step, "planned_steps": self.total, "epochs": self.epochs,
            "resumed_from": self.resumed_from, "world_size": self.d.world, "seconds": round(seconds, 3),
            "samples": sum(r[2] for r in self.rates),
            "samples_per_s": sum(r[2] for r in steady) / step_s if step_s else 0.0,
            "data_wait_frac": sum(r[1] for r in steady) / step_s if step_s else 0.0,
            "final_checkpoint": str(latest) if latest else None, "model_name": self.cfg.model,
            "image_size": self.built.image_size, "history": self.logger.history if self.logger else {},
        }


def train_worker(spec: TrainSpec) -> None:
    """Entry point of every rank (and of single-process mode). Rank 0 writes the summary JSON."""
    os.environ.update(spec.env)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    trainer = Trainer(spec)
    try:
        summary = trainer.train()
        if summary is not None:
            write_text_atomic(spec.summary_path, json.dumps(summary, indent=1))
    finally:
        if trainer.d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
