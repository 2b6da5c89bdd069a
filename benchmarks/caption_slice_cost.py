"""Caption slice cost: the caption stage's time per row stays flat as the crawl grows.

    python benchmarks/caption_slice_cost.py                        # 1,000 and 10,000 rows, commit_every 500
    python benchmarks/caption_slice_cost.py --sizes 200,1000 --commit-every 100

For each size, a fresh root with a synthetic bronze table of that many rows (the 32 real CC12M photos
of ../shared/data, about 90 KB each, repeated under new keys, so bronze grows with the crawl as a real
one does) and `run_caption` end to end with the tiny random-weight LLaVA of veclip.caption.tiny
(fast, real code path; meaningless captions). The to-do rows are snapshotted once per run and each
slice reads only its own file (veclip.model_stage), so a slice should cost the same at every size:
before, every slice re-ran the anti-join over bronze, image bytes included, and a crawl of N rows
read bronze N / commit_every times. Slice times come from timing veclip.model_stage.run_slice (read
from the snapshot, generate, MERGE); "other" is the rest of the run (status pass, snapshot, counts).
The workers load the model in a warm-up run first. Prints one table; the last column divides each
size's seconds per row by the first size's (flat: about 1.0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from caption_throughput import SHARD, shard_images  # noqa: E402


def write_bronze(spark, cfg, images: list[bytes], n: int) -> None:
    """n BRONZE rows built in Spark (the images cross-joined with a range, new keys), merged into bronze."""
    from pyspark.sql import functions as F

    from veclip.schemas import BRONZE
    from veclip.tables import Tables

    photos = spark.createDataFrame([(i, data) for i, data in enumerate(images)], "photo int, image binary")
    rows = (spark.range(n).withColumn("photo", (F.col("id") % len(images)).cast("int")).join(F.broadcast(photos), "photo")
            .select(F.substring(F.sha2(F.concat(F.lit("bench-"), F.col("id").cast("string")), 256), 1, 24).alias("key"),
                    F.lit(None).alias("url"), "image", F.sha2("image", 256).alias("image_sha256"),
                    F.lit(0).alias("width"), F.lit(0).alias("height"), F.lit("JPEG").alias("image_format"),
                    F.lit("RGB").alias("image_mode"), F.lit(None).alias("alt_text_raw"), F.lit(None).alias("alt_text"),
                    F.lit("bench").alias("source"), F.col("id").cast("string").alias("source_key"),
                    F.lit("webdataset").alias("source_format"), F.lit("2024-01-01").alias("ingested_at")))
    rows = rows.select(*[F.col(f.name).cast(f.dataType) for f in BRONZE.fields])
    Tables(cfg, spark).merge("bronze", rows, ["key"])


class SliceTimer:
    """Times every veclip.model_stage.run_slice call (the stage drivers look it up at call time)."""

    def __init__(self):
        from veclip import model_stage

        self.module, self.inner, self.seconds = model_stage, model_stage.run_slice, []

    def __enter__(self) -> "SliceTimer":
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - t0)

        self.module.run_slice = timed
        return self

    def __exit__(self, *exc) -> None:
        self.module.run_slice = self.inner


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000", help="bronze rows per run")
    p.add_argument("--commit-every", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--workdir", default=None)
    a = p.parse_args(argv)

    from veclip.caption.stage import run_caption
    from veclip.caption.tiny import build_tiny_llava
    from veclip.config import load_config
    from veclip.spark import get_spark

    if not os.path.exists(SHARD):
        sys.exit(f"real images not found: {SHARD} (the ../shared/data folder)")
    work = a.workdir or tempfile.mkdtemp(prefix="caption-slices-")
    images = shard_images(SHARD)
    model = os.path.join(work, "tiny-llava")
    if not os.path.exists(os.path.join(model, "config.json")):
        build_tiny_llava(model)

    def cfg_for(root: str):
        return load_config(None, [f"paths.root={root}", f"spark.master={a.master}", "spark.shuffle_partitions=2",
                                  "mlflow.enabled=false", f"caption.model={model}", f"caption.batch_size={a.batch_size}",
                                  f"caption.max_new_tokens={a.max_new_tokens}", f"caption.commit_every={a.commit_every}",
                                  "caption.max_failure_rate=1"], bare=True)

    spark = get_spark(cfg_for(os.path.join(work, "warmup")))
    spark.sparkContext.setLogLevel("ERROR")
    warm = cfg_for(os.path.join(work, "warmup"))
    # One batch per task slot: every Python worker loads the model once, as on a long job.
    write_bronze(spark, warm, images, a.batch_size * spark.sparkContext.defaultParallelism)
    run_caption(warm, spark)

    print(f"CC12M photos repeated, tiny LLaVA ({a.max_new_tokens} new tokens, batch {a.batch_size}), "
          f"commit_every {a.commit_every}, Spark {a.master}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    header = (f"{'rows':>8} {'slices':>6} {'seconds':>8} {'s/row':>8} {'other s':>8} {'slice 1 s':>9} "
              f"{'last s':>7} {'mean s':>7} {'s/row vs first':>14}")
    lines, first = [header, "-" * len(header)], None
    for n in [int(s) for s in a.sizes.split(",")]:
        cfg = cfg_for(os.path.join(work, f"rows-{n}"))
        write_bronze(spark, cfg, images, n)
        with SliceTimer() as timer:
            report = run_caption(cfg, spark)
        assert report.broken() == [] and report.counts["to_caption"] == n, report.format()
        per_row = report.seconds / n
        first = first or per_row
        slices = timer.seconds
        lines.append(f"{n:>8,} {len(slices):>6} {report.seconds:>8.1f} {per_row:>8.4f} "
                     f"{report.seconds - sum(slices):>8.1f} {slices[0]:>9.2f} {slices[-1]:>7.2f} "
                     f"{sum(slices) / len(slices):>7.2f} {per_row / first:>14.2f}")
        print(lines[-1], flush=True)
    print("\n".join(["", "seconds per row flat in crawl size: last column about 1.0; slice times alike"] + lines))
    spark.stop()


if __name__ == "__main__":
    main()
