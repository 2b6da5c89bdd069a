"""Caption throughput: the stage inside Spark next to the same model's standalone batched generate.

    python benchmarks/caption_throughput.py                        # tiny + small random LLaVA, batch 4 and 16
    python benchmarks/caption_throughput.py --sizes small --batch-sizes 8 --images 128 --master local[2]

Same images (real CC12M photos from ../shared/data, repeated under new keys), same model, same
batch size, same per-batch code (decode -> processor -> generate -> clean), in one run:
- standalone: one process, the model loaded once, `caption_batch` over the images in order;
- spark map:  veclip.inference.map_batches over a Delta table of the images (noop sink), models
              already loaded in the workers (a warm-up pass first, as on a long job);
- spark stage: run_caption end to end (canonical read, anti-join, inference, MERGE, counts).
A Spark task gets one thread (PySpark sets OMP_NUM_THREADS to spark.task.cpus), so the standalone
loop runs with the same thread count; Spark runs one task per slot, so the ratios divide Spark's
images/s by standalone x slots (perfect scaling over the slots): what is left is Spark's overhead
(target >= 0.9). Measuring standalone with torch's default threads on a loaded machine makes OpenMP
spin and turns the ratio into noise (10-20x seen). The models have random
weights: their captions are meaningless, only the arithmetic is real. Prints one table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHARD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                     "cc12m-sample", "cc12m-train-0000.tar")


def shard_images(path: str) -> list[bytes]:
    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read() for m in sorted(tar.getmembers(), key=lambda m: m.name)
                if m.name.endswith(".jpg")]


def bronze(spark, images: list[bytes], n: int):
    from veclip.schemas import BRONZE

    rows = []
    for i in range(n):
        data = images[i % len(images)]
        rows.append((hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:24], None, data,
                     hashlib.sha256(data).hexdigest(), 0, 0, "JPEG", "RGB", None, None, "bench", str(i),
                     "webdataset", dt.datetime(2024, 1, 1)))
    return spark.createDataFrame(rows, BRONZE)


def standalone(loader, images: list[bytes], batch_size: int, device: str) -> float:
    """images/s of the worker code without Spark (model load excluded, one warm-up batch)."""
    import pandas as pd

    predict = loader(device)
    predict(pd.DataFrame({"image": images[:batch_size]}))
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        predict(pd.DataFrame({"image": images[i:i + batch_size]}))
    return len(images) / (time.perf_counter() - t0)


def spark_map(spark, df, loader, batch_size: int) -> float:
    """images/s of map_batches over the table (workers warmed up on the same data first)."""
    from veclip.inference import arrow_rows_per_batch
    from veclip.inference import map_batches

    parts = spark.sparkContext.defaultParallelism
    src = df.select("key", "image").repartition(parts).cache()
    src.count()

    def run(frame):
        out = map_batches(frame, loader, loader.cache_key, batch_size, keep=["key"], output="caption")
        out.write.format("noop").mode("overwrite").save()

    with arrow_rows_per_batch(spark, max(64, batch_size)):
        run(src.limit(batch_size * parts).repartition(parts))  # warm-up: every worker loads the model
        t0 = time.perf_counter()
        run(src)
        seconds = time.perf_counter() - t0
    src.unpersist()
    return df.count() / seconds


def spark_stage(spark, cfg_for, n: int) -> float:
    from veclip.caption.stage import run_caption

    report = run_caption(cfg_for(f"caption.commit_every={n}"), spark, retry_errors=False)
    assert report.counts["captioned"] == n, report.format()
    return n / report.seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,small", help="random LLaVA sizes from veclip.caption.tiny.SIZES")
    p.add_argument("--batch-sizes", default="4,16")
    p.add_argument("--images", type=int, default=96, help="images per measurement")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--device", default="cpu", help="standalone device (Spark tasks use their GPU, else CPU)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the standalone loop (= spark.task.cpus)")
    a = p.parse_args(argv)

    from veclip.caption.stage import caption_loader
    from veclip.caption.tiny import build_tiny_llava
    from veclip.config import load_config
    from veclip.spark import get_spark
    from veclip.tables import Tables

    work = a.workdir or tempfile.mkdtemp(prefix="caption-bench-")
    images = shard_images(SHARD)
    reps = (a.images + len(images) - 1) // len(images)
    base = [f"paths.root={work}/root", f"spark.master={a.master}", "spark.shuffle_partitions=2",
            "mlflow.enabled=false", f"caption.max_new_tokens={a.max_new_tokens}"]
    cfg = load_config(None, base, bare=True)
    spark = get_spark(cfg)
    spark.sparkContext.setLogLevel("ERROR")
    Tables(cfg, spark).merge("bronze", bronze(spark, images, a.images), ["key"])
    table = Tables(cfg, spark).read("bronze")
    local = (images * reps)[:a.images]
    import torch

    torch.set_num_threads(a.threads)
    slots = spark.sparkContext.defaultParallelism
    print(f"{a.images} images (CC12M, repeated), {a.max_new_tokens} new tokens, Spark {a.master}, "
          f"{slots} task slots, standalone {a.threads} thread(s), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    header = f"{'model':<8} {'batch':>5} {'standalone':>11} {'spark map':>10} {'ratio':>6} {'stage':>8} {'ratio':>6}"
    lines = [header, "-" * len(header)]
    for size in a.sizes.split(","):
        model = os.path.join(work, f"llava-{size}")
        if not os.path.exists(os.path.join(model, "config.json")):
            build_tiny_llava(model, size=size)
        for bs in [int(b) for b in a.batch_sizes.split(",")]:
            def cfg_for(*sets, _m=model, _bs=bs):
                return load_config(None, base + [f"caption.model={_m}", f"caption.batch_size={_bs}",
                                                 f"caption.captioner_id=bench-{size}-{_bs}", *sets], bare=True)
            loader, _ = caption_loader(cfg_for().caption)
            alone = standalone(loader, local, bs, a.device)
            mapped = spark_map(spark, table, loader, bs)
            stage = spark_stage(spark, cfg_for, a.images)
            lines.append(f"{size:<8} {bs:>5} {alone:>9.1f}/s {mapped:>8.1f}/s {mapped / (alone * slots):>6.2f} "
                         f"{stage:>6.1f}/s {stage / (alone * slots):>6.2f}")
            print(lines[-1], flush=True)
    print("\n".join(["", f"images/s (higher is better); ratio = Spark / (standalone x {slots} slots), target >= 0.90"] + lines))
    spark.stop()


if __name__ == "__main__":
    main()
