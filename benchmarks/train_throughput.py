"""Trainer throughput: ours next to open_clip_train on the same images, captions, model and steps;
and ours with 1 and 2 processes through TorchDistributor.

    python benchmarks/train_throughput.py                     # veclip-tiny, batch 32, 2 epochs of 636 rows
    python benchmarks/train_throughput.py --model veclip-small --batch 16 --copies 2

Same data for both trainers: the gold table's JPEGs (COCO-mini x copies, longest side 256) and its
AltTexts (ours with train.p_vecap=0, so both see the same texts), written out as image files + CSV
for open_clip_train (`--dataset-type csv`, its reference trainer shipped with open_clip_torch). Same
model config, per-process batch, optimizer settings, decode workers (1) and number of steps; both
run fp32 on CPU in their own process. samples/s and data-wait fraction are steady state: the first
5 steps (start-up) are left out of both. Prints one table with the ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_common import REPO, bench_gold, table  # noqa: E402

SKIP = 5
OPEN_CLIP = ("import sys; sys.path.insert(0, {repo!r}); from veclip.clip import register_configs; "
             "register_configs(); from open_clip_train.main import main; main(sys.argv[1:])")
OURS = ("import pickle, sys; sys.path.insert(0, {repo!r}); from veclip.train.loop import train_worker; "
        "train_worker(pickle.load(open(sys.argv[1], 'rb')))")


def train_cfg(args, **over):
    from veclip.config.train import TrainConfig

    return TrainConfig(model=args.model, batch_size=args.batch, epochs=args.epochs, lr=5e-4, warmup_steps=10,
                       weight_decay=0.2, p_vecap=0.0, checkpoint_every=10_000, keep_checkpoints=1,
                       reader_pool="process", reader_workers=1, shuffle_buffer=256, **over)


def ours_single(args, plan, work: str) -> dict:
    from veclip.train.loop import TrainSpec

    spec = TrainSpec(train_cfg(args, mode="single"), plan, f"{work}/ours/ckpt", f"{work}/ours.json")
    with open(f"{work}/ours.pkl", "wb") as f:
        pickle.dump(spec, f)
    subprocess.run([sys.executable, "-c", OURS.format(repo=REPO), f"{work}/ours.pkl"], check=True,
                   stdout=subprocess.DEVNULL)
    return json.load(open(f"{work}/ours.json"))


def ours_distributed(args, plan, work: str, n: int) -> dict:
    from veclip.train.launch import launch
    from veclip.train.loop import TrainSpec

    cfg = train_cfg(args, mode="local", num_processes=n)
    spec = TrainSpec(cfg, plan, f"{work}/tdist{n}/ckpt", f"{work}/tdist{n}.json")
    return launch(spec, "local", n)


def open_clip_train(args, rows: list[dict], work: str) -> dict:
    images = os.path.join(work, "images")
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(work, "train.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        for r in rows:
            path = os.path.join(images, f"{r['key']}.jpg")
            with open(path, "wb") as img:
                img.write(r["image"])
            w.writerow([path, r["alt_text"]])
    cmd = [sys.executable, "-c", OPEN_CLIP.format(repo=REPO), "--train-data", os.path.join(work, "train.csv"),
           "--dataset-type", "csv", "--csv-separator", ",", "--csv-img-key", "filepath",
           "--csv-caption-key", "title", "--model", args.model, "--batch-size", str(args.batch),
           "--epochs", str(args.epochs), "--workers", "1", "--lr", "5e-4", "--warmup", "10", "--wd", "0.2",
           "--precision", "fp32", "--device", "cpu", "--log-every-n-steps", "1", "--save-frequency", "0",
           "--logs", os.path.join(work, "open_clip_logs"), "--name", "bench", "--seed", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    log = out.stdout + out.stderr
    steps = [(float(d), float(b)) for d, b in re.findall(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+)", log)]
    if out.returncode != 0 or len(steps) <= SKIP:
        sys.exit(f"open_clip_train failed (rc {out.returncode}):\n{log[-3000:]}")
    steady = steps[SKIP:]
    secs = sum(b for _, b in steady)
    return {"steps": len(steps), "samples_per_s": len(steady) * args.batch / secs,
            "data_wait_frac": sum(d for d, _ in steady) / secs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="veclip-tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--root", default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process for every run (OMP_NUM_THREADS); default: each trainer's own")
    args = p.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every trainer process
    work = args.root or tempfile.mkdtemp(prefix="veclip-bench-train-")
    spark, _, plan, rows = bench_gold(work, args.copies)

    ref = open_clip_train(args, rows, work)
    ours = ours_single(args, plan, work)
    one, two = ours_distributed(args, plan, work, 1), ours_distributed(args, plan, work, 2)
    spark.stop()
    base = ref["samples_per_s"]
    lines = [["open_clip_train (csv, 1 worker)", ref["steps"], base, 1.0, f"{ref['data_wait_frac']:.1%}"],
             ["ours, single process", ours["steps"], ours["samples_per_s"], ours["samples_per_s"] / base,
              f"{ours['data_wait_frac']:.1%}"],
             ["ours, TorchDistributor 1 process", one["steps"], one["samples_per_s"], one["samples_per_s"] / base,
              f"{one['data_wait_frac']:.1%}"],
             ["ours, TorchDistributor 2 processes", two["steps"], two["samples_per_s"],
              two["samples_per_s"] / base, f"{two['data_wait_frac']:.1%}"]]
    print(f"\n{args.model}, batch {args.batch} per process, {len(rows)} rows x {args.epochs} epochs, "
          f"{os.cpu_count()} cores, threads per process: {args.threads or 'default'}, "
          f"load average {os.getloadavg()[0]:.1f}; samples/s of the global batch, first {SKIP} steps left out")
    print(table(["trainer", "steps", "samples/s", "vs open_clip_train", "data wait"], lines))
    print(f"2 vs 1 processes: {two['samples_per_s'] / one['samples_per_s']:.2f}x samples/s "
          f"(2 ranks each with batch {args.batch}, on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
