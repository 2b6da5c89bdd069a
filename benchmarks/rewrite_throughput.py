"""Rewrite throughput: the stage inside Spark next to the same model's standalone batched generate.

    .venv/bin/python benchmarks/rewrite_throughput.py                      # SmolLM2, 64 rows, batch 8
    .venv/bin/python benchmarks/rewrite_throughput.py --rows 128 --batch-sizes 4,16 --master local[2]

Same inputs (real AltTexts with stand-in COCO-mini captions, see rewrite_inputs.py), same model,
same batch size, same per-batch code (clean -> prompt -> generate -> validate -> fallback), one run:
- standalone: one process, the model loaded once, `Rewriter.rewrite` over the rows in batches;
- spark map:  veclip.inference.map_batches over the rows (noop sink), models already loaded in the
              workers (a warm-up pass first, as on a long job);
- spark stage: run_rewrite end to end (canonical + captions + vecap anti-join, inference, MERGE,
              counts; one slice; worker model loads included when not warm).
The standalone loop gets as many torch threads as a Spark task (spark.task.cpus, 1 by default), and
the ratios divide Spark's rows/s by standalone x task slots (perfect scaling over the slots), so what
is left is Spark's overhead (target >= 0.9). Also checks that Spark wrote the
same VeCaps as the standalone run (greedy decoding: it should, row for row).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rewrite_inputs import stand_in_pairs, write_tables  # noqa: E402

CAPTIONER = "stand-in"


def standalone(loader, pairs, batch_size: int) -> tuple[float, float, list[dict]]:
    """(load seconds, rows/s without the load, results) of the worker code without Spark."""
    from veclip.rewrite.rewriter import rewrite_frame

    t0 = time.perf_counter()
    rw = loader("cpu")
    load_s = time.perf_counter() - t0
    rewrite_frame(rw, pairs.head(batch_size), batch_size)          # warm-up batch
    t0 = time.perf_counter()
    results = rewrite_frame(rw, pairs, batch_size)
    return load_s, len(pairs) / (time.perf_counter() - t0), results


def spark_map(spark, pairs_df, loader, batch_size: int) -> float:
    from veclip.inference import map_batches
    from veclip.rewrite.stage import cache_key

    parts = spark.sparkContext.defaultParallelism
    src = pairs_df.repartition(parts).cache()
    n = src.count()

    def run(frame):
        out = map_batches(frame, loader, cache_key(loader), batch_size, keep=["key"], output="result")
        out.write.format("noop").mode("overwrite").save()

    run(src.limit(batch_size * parts).repartition(parts))          # warm-up: every worker loads the model
    t0 = time.perf_counter()
    run(src)
    seconds = time.perf_counter() - t0
    src.unpersist()
    return n / seconds


def spark_stage(spark, cfg, n: int):
    from veclip.rewrite.stage import run_rewrite

    report = run_rewrite(cfg, spark, retry_errors=False)
    done = report.counts["rewritten"] + report.counts["fallback"]
    assert done == n and not report.broken(), report.format()
    return n / report.seconds, report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--batch-sizes", default="8")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--models", default=os.path.expanduser("~/.cache/veclip/models"),
                   help="paths.models: where the dequantised SmolLM2 copy is kept")
    p.add_argument("--set", action="append", default=[], help="extra config overrides (e.g. rewrite.model=PATH)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the standalone run (= spark.task.cpus, what each Spark task gets)")
    p.add_argument("--workdir", default=None)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)

    from veclip.config import load_config
    from veclip.rewrite.rewriter import RewriterLoader
    from veclip.spark import get_spark
    from veclip.tables import Tables

    work = a.workdir or tempfile.mkdtemp(prefix="rewrite-bench-")
    pairs = stand_in_pairs(a.rows, seed=1)
    base = [f"paths.root={work}/root", f"paths.models={a.models}", f"spark.master={a.master}",
            "spark.shuffle_partitions=2", "mlflow.enabled=false", f"caption.captioner_id={CAPTIONER}",
            f"rewrite.max_new_tokens={a.max_new_tokens}", f"rewrite.commit_every={a.rows}", *a.set]
    cfg0 = load_config(None, base, bare=True)
    spark = get_spark(cfg0)
    spark.sparkContext.setLogLevel("ERROR")
    write_tables(spark, Tables(cfg0, spark), pairs, CAPTIONER)
    pairs_df = spark.createDataFrame(pairs)
    slots = spark.sparkContext.defaultParallelism
    print(f"{len(pairs)} rows (real AltTexts + stand-in captions), {a.max_new_tokens} new tokens max, "
          f"model {cfg0.rewrite.model}, Spark {a.master} ({slots} task slots), standalone torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    header = (f"{'batch':>5} {'load':>6} {'standalone':>11} {'spark map':>10} {'ratio':>6} {'stage':>9} {'ratio':>6}"
              f" {'same vecaps':>11} {'fallback':>8}")
    lines = [header, "-" * len(header)]
    for bs in [int(b) for b in a.batch_sizes.split(",")]:
        cfg = load_config(None, base + [f"rewrite.batch_size={bs}", f"rewrite.rewriter_id=bench-{bs}"], bare=True)
        loader = RewriterLoader.from_config(cfg)
        load_s, alone, results = standalone(loader, pairs, bs)
        mapped = spark_map(spark, pairs_df, loader, bs)
        stage, report = spark_stage(spark, cfg, len(pairs))
        got = {r.key: r.vecap for r in Tables(cfg, spark).read("vecap").where(f"rewriter = 'bench-{bs}'").collect()}
        same = sum(got.get(k) == r["vecap"] for k, r in zip(pairs["key"], results)) / len(pairs)
        fallback = sum(r["fallback_used"] for r in results) / len(results)
        lines.append(f"{bs:>5} {load_s:>5.1f}s {alone:>9.2f}/s {mapped:>8.2f}/s {mapped / (alone * slots):>6.2f} "
                     f"{stage:>7.2f}/s {stage / (alone * slots):>6.2f} {same:>10.0%} {fallback:>8.0%}")
        print(lines[-1], flush=True)
    print("\n".join(["", f"rows/s (higher is better); ratio = Spark / (standalone x {slots} slots), target >= 0.90; load = standalone "
                     "model load from the cached copy"] + lines))
    spark.stop()


if __name__ == "__main__":
    main()
