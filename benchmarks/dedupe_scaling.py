"""Dedupe speed: image hashing per core next to `imagehash`, and the whole stage at growing sizes.

    .venv/bin/python benchmarks/dedupe_scaling.py [--sizes 1000,10000,100000] [--budget-s 600] [--index blocks]
    .venv/bin/python benchmarks/dedupe_scaling.py --hash-only

1. Hashing, one process, one thread, the same encoded images for all: our UDF's batch function
   (decode once -> pixel sha256 + pHash, DCT batched), the same without the pixel sha256, and
   `imagehash.phash` (decode + pHash), on COCO photos (~640x480) and CIFAR-10 thumbnails (32x32).
   rows/s per core and the ratios.
2. The stage (`run_dedupe`, local Spark, a fresh root per size) on bronze tables of N rows: CIFAR-10
   images upscaled to 48x48 (mirrored ones when N exceeds the 60k images), 20% of rows being
   augmented copies. Bronze writing is not timed. Prints seconds, rows/s and the time ratio per 10x
   rows (near-linear: <= ~12x). When the budget (stage time only) runs out, the running size is
   cancelled and the rest are not run; both are reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")      # per-core figures: no hidden BLAS threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import glob  # noqa: E402
import io  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.bronze_fixture import AUGMENTS  # noqa: E402
from veclip.dedupe.phash import phash_batch  # noqa: E402
from veclip.dedupe.pixels import gray32, hash_images  # noqa: E402

DATA = os.environ.get("VECLIP_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def best_rates(fns: dict, items: list, rounds: int = 3) -> dict:
    """rows per CPU-second of each function (process CPU time: other processes' load on the shared
    cores does not count), best of `rounds` interleaved runs."""
    best = {name: 0.0 for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn(items)
            best[name] = max(best[name], len(items) / (time.process_time() - t0))
    return best


def ours(images: list[bytes]) -> None:
    """The UDF's batch function: decode once -> pixel sha256 + pHash (batched DCT)."""
    for i in range(0, len(images), 256):
        hash_images(images[i:i + 256])


def ours_phash_only(images: list[bytes]) -> None:
    """The same decode and batched pHash, without the pixel sha256."""
    for i in range(0, len(images), 256):
        grays = []
        for data in images[i:i + 256]:
            with Image.open(io.BytesIO(data)) as img:
                grays.append(gray32(img))
        phash_batch(np.stack(grays))


def theirs(images: list[bytes]) -> None:
    import imagehash

    for data in images:
        imagehash.phash(Image.open(io.BytesIO(data)))


def hashing_benchmark() -> None:
    coco = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(DATA, "coco-mini", "images", "*.jpg")))]
    cifar = list(pd.read_parquet(os.path.join(DATA, "cifar10", "test.parquet")).jpeg[:3000])
    if not coco or not cifar:
        sys.exit(f"real data not found under {DATA}")
    fns = {"ours: sha256 + pHash": ours, "ours: pHash only": ours_phash_only, "imagehash.phash": theirs}
    print("== hashing, rows per CPU-second, one thread (same encoded images, decode included; best of 3) ==")
    print(f"{'images':<22}" + "".join(f"{n:>22}" for n in fns) + f"{'ours / imagehash':>18}{'pHash / imagehash':>19}")
    for name, items in [(f"COCO photos ({len(coco)})", coco), (f"CIFAR 32x32 ({len(cifar)})", cifar)]:
        best_rates(fns, items[:20], rounds=1)                          # warm up imports and caches
        r = best_rates(fns, items)
        a, b, c = r["ours: sha256 + pHash"], r["ours: pHash only"], r["imagehash.phash"]
        print(f"{name:<22}{a:>22,.0f}{b:>22,.0f}{c:>22,.0f}{a / c:>17.2f}x{b / c:>18.2f}x")


def cifar_images(n: int, seed: int = 0) -> list[bytes]:
    """n distinct 48x48 JPEGs from CIFAR-10 (train + test), mirrored copies beyond the 60k."""
    frames = [pd.read_parquet(os.path.join(DATA, "cifar10", f)).jpeg for f in ("train.parquet", "test.parquet")]
    # Shuffled (the files are sorted by class): a sample of all ten classes at every size.
    raw = list(pd.concat(frames).sample(frac=1.0, random_state=seed))[:n]
    out = []
    for i in range(n):
        img = Image.open(io.BytesIO(raw[i % len(raw)])).convert("RGB").resize((48, 48), Image.Resampling.BICUBIC)
        if i >= len(raw):
            img = ImageOps.mirror(img)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def bronze_parquet(n: int, path: str) -> None:
    """Bronze rows (BRONZE columns) as a Parquet file: 80% originals, 20% augmented copies of them."""
    import hashlib

    n_orig = n - n // 5
    images = cifar_images(n_orig)
    rng = random.Random(n)
    names = list(AUGMENTS)
    rows = [(f"o{i}", data) for i, data in enumerate(images)]
    for j in range(n - n_orig):
        i = rng.randrange(n_orig)
        rows.append((f"c{j}-of-{i}", AUGMENTS[names[j % len(names)]](images[i], j)))
    now = dt.datetime(2024, 1, 1)
    info = []
    for _, d in rows:
        with Image.open(io.BytesIO(d)) as img:
            info.append((img.width, img.height, img.format, img.mode))
    df = pd.DataFrame({
        "key": [hashlib.sha256(k.encode()).hexdigest()[:24] for k, _ in rows], "url": None,
        "image": [d for _, d in rows], "image_sha256": [hashlib.sha256(d).hexdigest() for _, d in rows],
        "width": [i[0] for i in info], "height": [i[1] for i in info],
        "image_format": [i[2] for i in info], "image_mode": [i[3] for i in info],
        "alt_text_raw": [f"photo {k}" for k, _ in rows], "alt_text": [f"photo {k}" for k, _ in rows],
        "source": "bench.parquet", "source_key": [k for k, _ in rows], "source_format": "parquet",
        "ingested_at": now})
    df.to_parquet(path, index=False)


def run_size(spark, n: int, root: str, timeout_s: float, index: str = "blocks"):
    """Fresh root with a bronze table of n rows, then one timed `run_dedupe`: (seconds, report).
    After timeout_s a watchdog cancels the run's Spark jobs, every second until it ends (it raises)."""
    from veclip.config import load_config
    from veclip.dedupe import run_dedupe
    from veclip.schemas import BRONZE
    from veclip.tables import Tables

    base = os.path.join(root, f"n{n}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "conf", "local.yaml"),
                      [f"paths.root={base}", "spark.master=local[2]", "spark.shuffle_partitions=8",
                       "mlflow.enabled=false", f"dedupe.phash_index={index}"])
    src = os.path.join(base, "bronze.parquet")
    bronze_parquet(n, src)
    df = spark.read.parquet(src)
    Tables(cfg, spark).merge("bronze", df.select(*[df[f.name].cast(f.dataType) for f in BRONZE.fields]), ["key"])
    done = threading.Event()
    t0 = time.monotonic()

    def watch() -> None:
        while not done.wait(1.0):
            if time.monotonic() - t0 > timeout_s:
                spark.sparkContext.cancelAllJobs()

    threading.Thread(target=watch, daemon=True).start()
    try:
        report = run_dedupe(cfg, spark)
    finally:
        done.set()
    return time.monotonic() - t0, report


def stage_benchmark(sizes: list[int], budget_s: float, root: str, index: str = "blocks") -> None:
    from veclip.config import load_config
    from veclip.spark import get_spark

    spark = get_spark(load_config(None, [f"paths.root={root}", "spark.master=local[2]",
                                         "spark.shuffle_partitions=8"], bare=True))
    warm, _ = run_size(spark, 200, root, budget_s)
    print(f"\n== the whole stage (local[2]), after an untimed 200-row warm-up run ({warm:.0f}s) ==")
    results: list[tuple[int, float]] = []
    spent = 0.0                                   # stage time only: preparing bronze is not counted
    for n in sizes:
        if spent >= budget_s:
            print(f"{n:>8,} rows: not run, the {budget_s:.0f}s budget is spent")
            continue
        try:
            secs, report = run_size(spark, n, root, budget_s - spent, index)
        except Exception as err:  # noqa: BLE001 - a run cancelled by the budget is reported, not raised
            print(f"{n:>8,} rows: stopped by the {budget_s:.0f}s budget ({type(err).__name__})", flush=True)
            spent = budget_s
            continue
        spent += secs
        results.append((n, secs))
        c = report.counts
        print(f"{n:>8,} rows: {secs:7.1f}s  {n / secs:8,.0f} rows/s  canonical {c['silver_canonical']:,}  "
              f"duplicates {c['silver_duplicates']:,}  image candidate pairs {c.get('image_candidate_pairs', 0):,}  "
              f"accounting {'OK' if not report.broken() else 'BROKEN'}", flush=True)
    for (n1, s1), (n2, s2) in zip(results, results[1:]):
        print(f"{n1:,} -> {n2:,} rows (x{n2 / n1:.0f}): time x{s2 / s1:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--budget-s", type=float, default=600, help="time budget of the stage runs (not data prep)")
    ap.add_argument("--root", default="work/benchmarks/dedupe_scaling")
    ap.add_argument("--hash-only", action="store_true")
    ap.add_argument("--index", default="blocks", help="dedupe.phash_index of the stage runs (blocks, exhaustive, auto)")
    args = ap.parse_args()
    hashing_benchmark()
    if not args.hash_only:
        stage_benchmark([int(s) for s in args.sizes.split(",")], args.budget_s, os.path.abspath(args.root), args.index)


if __name__ == "__main__":
    main()
