"""petastorm reader throughput next to reading the same Parquet files with pyarrow directly.

    python benchmarks/train_reader.py                       # 636 rows (COCO-mini x4, 256 px JPEGs), 64 px crops
    python benchmarks/train_reader.py --copies 8 --image-size 96 --workers 1,2

Same files (one gold version), same per-row work (JPEG decode, random crop, text choice, tokenise),
rows per second over one full epoch after a warm-up epoch (worker start-up reported apart):
- pyarrow raw:        pq.read_table of the files, no decoding (the I/O floor);
- pyarrow+transform:  pq.read_table, then the trainer's SampleTransform in this process;
- petastorm dummy:    RankStream with the dummy pool (the same work inside petastorm, one process);
- petastorm process:  RankStream with N worker processes (decode beside the consumer).
Ratios are rows/s over pyarrow+transform. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_common import bench_gold, table  # noqa: E402


def pyarrow_rows(plan, transform=None) -> tuple[int, float]:
    import pyarrow.parquet as pq

    from veclip.train.samples import COLUMNS_IN

    t0, n = time.perf_counter(), 0
    for f in plan.files:
        t = pq.read_table(f.url.removeprefix("file://"), columns=COLUMNS_IN)
        n += t.num_rows
        if transform is not None:
            transform(t.to_pandas())
    return n, time.perf_counter() - t0


def petastorm_rows(plan, pool: str, workers: int, image_size: int) -> tuple[int, float, float]:
    """(rows of the timed epoch, its seconds, start-up + warm-up epoch seconds)."""
    from veclip.train import data
    from veclip.config.train import TrainConfig

    t = TrainConfig(model="veclip-tiny", p_vecap=0.5, seed=0, batch_size=32, shuffle_buffer=0, reader_pool=pool,
                    reader_workers=workers)
    s = data.StreamSettings.from_config(t, image_size=image_size, context_length=77)
    t0 = time.perf_counter()
    stream = data.RankStream(list(plan.files), s, rank=0)
    try:
        for epoch in range(2):
            if epoch == 1:
                warm, t1 = time.perf_counter() - t0, time.perf_counter()
            reader = stream.epoch(epoch)
            while reader.next_batch() is not None:
                pass
            counts = reader.finish()
            counts.check(0, plan.table, plan.version)
        return counts.rows_streamed, time.perf_counter() - t1, warm
    finally:
        stream.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--root", default=None)
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="veclip-bench-reader-")
    spark, _, plan, _ = bench_gold(root, args.copies, args.max_side)
    spark.stop()

    from veclip.config.train import TrainConfig
    from veclip.train.samples import SampleSettings, SampleTransform

    settings = SampleSettings.from_config(TrainConfig(model="veclip-tiny", p_vecap=0.5, seed=0), args.image_size)
    transform = SampleTransform(settings, 0, 1)
    transform.tokenizer  # loaded before timing, as in a warm worker
    pyarrow_rows(plan, transform)  # warm the page cache and the decoder
    n, raw = pyarrow_rows(plan)
    _, direct = pyarrow_rows(plan, transform)
    base = n / direct
    lines = [["pyarrow raw (no decode)", n, raw, n / raw, n / raw / base, "-"],
             ["pyarrow + transform", n, direct, base, 1.0, "-"]]
    runs = [("dummy", 1)] + [("process", int(w)) for w in args.workers.split(",")]
    for pool, workers in runs:
        rows, secs, warm = petastorm_rows(plan, pool, workers, args.image_size)
        lines.append([f"petastorm {pool} x{workers}", rows, secs, rows / secs, rows / secs / base, f"{warm:.1f}"])
    print(f"\n{plan.rows} rows in {len(plan.files)} files, JPEG longest side {args.max_side}, "
          f"crops {args.image_size}px, {os.cpu_count()} cores")
    print(table(["reader", "rows", "seconds", "rows/s", "vs pyarrow+transform", "start+warm-up s"], lines))


if __name__ == "__main__":
    main()
