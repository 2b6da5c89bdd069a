"""Engine throughput: the same model and inputs through the `hf` and `vllm` engines, standalone and as
the Spark stage, with best-of-n; one run, figures and ratios side by side.

    .venv/bin/python benchmarks/engine_throughput.py                           # rewrite: SmolLM2, 64 rows
    .venv/bin/python benchmarks/engine_throughput.py --rows 1000 --device cuda --dtype bfloat16   # on a GPU
    .venv/bin/python benchmarks/engine_throughput.py --captioner DIR     # + the caption stage (1,024 images)
    .venv/bin/python benchmarks/engine_throughput.py --engines vllm --skip-best-of --rows 512   # stage vs engine at a real slice size

Rewrite (the fusion prompts of the stage: real web AltTexts with stand-in COCO captions, see
rewrite_inputs.py; SmolLM2-135M-Instruct unless `--set rewrite.model=...`), for each engine:
- load: seconds to build the model (hf: from the dequantised copy; vllm: the engine, its processes);
- engine: the rendered prompts through the engine alone, greedy (hf: `CausalLM.generate` in batches
  of rewrite.batch_size with its shared-prefix cache; vllm: all prompts in one call) -> rows/s and
  generated tokens/s;
- rewriter n=1 and n=4: the worker code (prompt, generate, validate, choose, fall back) on the same
  rows, with the fallback rate; the n=4 / n=1 time ratio (target: best-of-4 costs at most 4x);
- stage: run_rewrite inside Spark end to end (slice snapshot, inference, MERGE, counts), rows/s, and
  its ratio to the standalone rewriter (target >= 0.9); a warm-up run on another root first, so that
  the figure, like the standalone ones, leaves out the engine start (once per worker on a long job);
  then the other task plan for comparison (`rewrite.partitions`): for vllm two tasks, one
  one-thread engine per core (the plan before one engine per executor became the CPU default); for hf
  one task with both threads.
Then `vllm / hf` for each figure (target on the 2-core CPU machine: rewriter rows/s >= 1.2x; on a GPU
>= 5x on 1,000 prompts in bf16).

Caption (`--captioner DIR`, a LLaVA-family folder such as the demo captioner; the 32 CC12M photos
repeated to `--images` rows under new keys): standalone images/s
(`caption_images`, hf in batches of caption.batch_size, vllm all at once) and the caption stage in
Spark, for both engines.

On CPU every vLLM engine is bounded (caption/rewrite.vllm.cpu_kv_cache_gib, 1 GiB by default, see
veclip/vllm_engine.py). Run it on a quiet machine: figures taken beside another heavy job are off by
3-10x. The load average is printed with the results.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rewrite_inputs import stand_in_pairs, write_tables  # noqa: E402

CAPTIONER = "stand-in"
ENGINES = ("hf", "vllm")


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def engine_alone(rw, pairs, batch_size: int, engine: str) -> tuple[float, float]:
    """(rows/s, generated tokens/s) of the engine on the rendered fusion prompts, greedy."""
    from veclip.rewrite.prompt import clean_for_prompt

    b = rw.config
    prompts = [rw.prompt(clean_for_prompt(a, b.alt_text_max_chars), clean_for_prompt(c, b.caption_max_chars))
               for a, c in zip(pairs["alt_text"], pairs["caption"])]
    p = rw.config
    chunk = len(prompts) if engine == "vllm" else batch_size
    rw.lm.generate(prompts[:2], p.max_new_tokens, prefix=rw.prefix)          # warm-up
    t0, tokens = time.perf_counter(), 0
    for i in range(0, len(prompts), chunk):
        gens = rw.lm.generate(prompts[i:i + chunk], p.max_new_tokens, prefix=rw.prefix)
        tokens += sum(g.tokens for g in gens)
    seconds = time.perf_counter() - t0
    return len(prompts) / seconds, tokens / seconds


def rewriter_alone(rw, pairs, batch_size: int, engine: str) -> tuple[float, float, list[dict]]:
    """(rows/s, fallback share, results) of the worker code, as the stage runs it on one partition."""
    from veclip.rewrite.rewriter import rewrite_frame

    chunk = len(pairs) if engine == "vllm" else batch_size
    results, seconds = timed(rewrite_frame, rw, pairs, chunk)
    return len(pairs) / seconds, sum(r["fallback_used"] for r in results) / len(results), results


def rewrite_stage(spark, cfg, warm_cfg, n: int):
    """Rows/s of run_rewrite on the n rows, after a warm-up run on another root with the same settings
    (every Python worker loads its engine there, as it does once on a long job)."""
    from veclip.rewrite.stage import run_rewrite
    from veclip.tables import Tables

    # One batch per task slot, so that the warm-up's plan has as many tasks as the measured run's (each
    # Python worker that will run a task loads its model here).
    warm_rows = spark.sparkContext.defaultParallelism * cfg.rewrite.batch_size
    write_tables(spark, Tables(warm_cfg, spark), stand_in_pairs(warm_rows, seed=2),
                 CAPTIONER)
    run_rewrite(warm_cfg, spark)
    report = run_rewrite(cfg, spark)
    done = report.counts["rewritten"] + report.counts["fallback"]
    assert done == n and not report.broken(), report.format()
    return n / report.seconds


def rewrite_rows(a, spark, base) -> list[dict]:
    from veclip.config import load_config
    from veclip.rewrite.rewriter import Rewriter, RewriterLoader

    pairs = stand_in_pairs(a.rows, seed=1)
    rows = []
    for engine in a.engines:
        sets = base + [f"rewrite.engine={engine}", f"rewrite.batch_size={a.batch_size}"]
        loader = RewriterLoader.from_config(load_config(None, sets, bare=True))
        rw, load_s = timed(loader, a.device)
        rows_s, tok_s = engine_alone(rw, pairs, a.batch_size, engine)
        n1, fb1, _ = rewriter_alone(rw, pairs, a.batch_size, engine)
        n4 = fb4 = None
        if not a.skip_best_of:
            # The same loaded model with n=4: only the loader's settings differ (no second engine).
            rw4 = Rewriter(rw.lm, RewriterLoader.from_config(load_config(None, sets + ["rewrite.num_candidates=4"],
                                                                         bare=True)))
            n4, fb4, _ = rewriter_alone(rw4, pairs, a.batch_size, engine)
            del rw4
        _free_engines(rw.lm)
        del rw
        stage_sets = sets + [f"rewrite.rewriter_id=bench-{engine}"]
        stage = rewrite_stage(spark, load_config(None, stage_sets, bare=True),
                              load_config(None, stage_sets + [f"paths.root={a.work}/warm-{engine}"], bare=True), len(pairs))
        # The other plan: vllm as two one-thread engines (one per core), hf as one task with both threads.
        other = 2 if engine == "vllm" else 1
        one_sets = sets + [f"rewrite.rewriter_id=bench-{engine}-{other}", f"rewrite.partitions={other}"]
        stage1 = rewrite_stage(spark, load_config(None, one_sets, bare=True),
                               load_config(None, one_sets + [f"paths.root={a.work}/warm1-{engine}"], bare=True), len(pairs))
        rows.append(dict(engine=engine, load=load_s, engine_rows=rows_s, tokens=tok_s, n1=n1, fb1=fb1, n4=n4,
                         fb4=fb4, stage=stage, stage1=stage1))
        print(f"  {engine}: load {load_s:.0f}s, engine {rows_s:.2f} rows/s {tok_s:.0f} tok/s, rewriter n=1 "
              f"{n1:.2f} rows/s ({fb1:.0%} fallback), n=4 {fig(n4)} rows/s ({fig(fb4, '.0%')}), stage {stage:.2f} rows/s, "
              f"other plan ({other} task(s)) {stage1:.2f} rows/s",
              flush=True)
    return rows


def _free_engines(lm=None) -> None:
    """Shut down a standalone vLLM engine (an hf model just goes), so two never hold memory at once."""
    import gc

    from veclip.vllm_engine import shutdown_llm

    if getattr(lm, "llm", None) is not None:
        shutdown_llm(lm.llm)
    gc.collect()


def caption_rows(a, spark, base) -> list[dict]:
    import datetime as dt

    import pandas as pd

    from veclip.caption.predict import VLLM_IMAGES_PER_CALL
    from veclip.caption.stage import caption_loader, run_caption
    from veclip.config import load_config
    from veclip.schemas import BRONZE
    from veclip.tables import Tables

    from caption_throughput import SHARD, shard_images

    photos = shard_images(SHARD)                       # 32 real photos, repeated under new keys
    images = [photos[i % len(photos)] for i in range(a.images)]
    rows = []
    for engine in a.engines:
        sets = base + [f"caption.model={a.captioner}", f"caption.engine={engine}",
                       f"caption.captioner_id=bench-{engine}", f"paths.root={a.work}/caption-{engine}",
                       f"caption.commit_every={len(images)}"]
        cfg = load_config(None, sets, bare=True)
        loader, _ = caption_loader(cfg.caption, cfg.ingest.max_pixels)
        predict, load_s = timed(loader, a.device)
        chunk = VLLM_IMAGES_PER_CALL if engine == "vllm" else cfg.caption.batch_size   # as the stage calls it
        predict(pd.DataFrame({"image": images[:2]}))          # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(images), chunk):
            predict(pd.DataFrame({"image": images[i:i + chunk]}))
        alone = len(images) / (time.perf_counter() - t0)
        del predict
        _free_engines()
        tables = Tables(cfg, spark)
        bronze = [(hashlib.sha256(f"cap-{i}".encode()).hexdigest()[:24], None, img, hashlib.sha256(img).hexdigest(),
                   0, 0, "JPEG", "RGB", None, None, "bench", str(i), "tar", dt.datetime(2026, 1, 1))
                  for i, img in enumerate(images)]
        # Warm-up on another root with the same settings: every Python worker loads the captioner once.
        warm = load_config(None, sets + [f"paths.root={a.work}/caption-warm-{engine}"], bare=True)
        width = spark.sparkContext.defaultParallelism * cfg.caption.batch_size   # a task per slot, as measured
        Tables(warm, spark).merge("bronze", spark.createDataFrame(bronze[:width], BRONZE), ["key"])
        run_caption(warm, spark)
        tables.merge("bronze", spark.createDataFrame(bronze, BRONZE), ["key"])
        report = run_caption(cfg, spark)
        stage = len(images) / report.seconds
        rows.append(dict(engine=engine, load=load_s, alone=alone, stage=stage))
        print(f"  caption {engine}: load {load_s:.0f}s, standalone {alone:.2f} images/s, stage {stage:.2f} images/s",
              flush=True)
    return rows


def fig(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}x" if y else "-"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="hf batch (rewrite.batch_size)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (cuda:0) on a GPU machine")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--captioner", default=None, help="a LLaVA-family folder: also benchmark the caption stage")
    p.add_argument("--images", type=int, default=1024, help="caption: the 32 CC12M photos repeated to this many rows")
    p.add_argument("--skip-rewrite", action="store_true")
    p.add_argument("--skip-best-of", action="store_true", help="rewrite: leave out the n=4 run (long at many rows)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma list, e.g. vllm: the stage ratio at more rows")
    p.add_argument("--models", default=os.path.expanduser("~/.cache/veclip/models"))
    p.add_argument("--set", action="append", default=[], help="extra config overrides")
    p.add_argument("--workdir", default=None)
    a = p.parse_args(argv)
    a.device = "cuda:0" if a.device == "cuda" else a.device
    a.engines = [e for e in ENGINES if e in a.engines.split(",")]
    a.work = a.workdir or tempfile.mkdtemp(prefix="engine-bench-")

    from veclip.config import load_config
    from veclip.spark import get_spark
    from veclip.tables import Tables

    base = [f"paths.root={a.work}/root", f"paths.models={a.models}", f"spark.master={a.master}",
            "spark.shuffle_partitions=2", "mlflow.enabled=false", f"caption.captioner_id={CAPTIONER}",
            f"rewrite.dtype={a.dtype}", f"caption.dtype={a.dtype}", f"rewrite.commit_every={a.rows}", *a.set]
    cfg0 = load_config(None, base, bare=True)
    spark = get_spark(cfg0)
    spark.sparkContext.setLogLevel("ERROR")
    print(f"device {a.device}, dtype {a.dtype}, Spark {a.master}, {os.cpu_count()} CPUs, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    lines = []
    if not a.skip_rewrite:
        write_tables(spark, Tables(cfg0, spark), stand_in_pairs(a.rows, seed=1), CAPTIONER)
        print(f"rewrite: {a.rows} fusion prompts, model {cfg0.rewrite.model}, {cfg0.rewrite.max_new_tokens} new tokens",
              flush=True)
        r = {row["engine"]: row for row in rewrite_rows(a, spark, base)}
        head = (f"{'engine':>6} {'load':>6} {'engine rows/s':>13} {'tokens/s':>9} {'n=1 rows/s':>10} {'fallback':>8} "
                f"{'n=4 rows/s':>10} {'fallback':>8} {'n4 cost':>7} {'stage rows/s':>12} {'stage/alone':>11} "
                f"{'other plan':>13} {'other/alone':>12}")
        lines += ["", f"rewrite, {a.rows} rows", head, "-" * len(head)]
        for e in a.engines:
            x = r[e]
            lines.append(f"{e:>6} {x['load']:>5.0f}s {x['engine_rows']:>13.2f} {x['tokens']:>9.0f} {x['n1']:>10.2f} "
                         f"{x['fb1']:>8.0%} {fig(x['n4']):>10} {fig(x['fb4'], '.0%'):>8} "
                         f"{ratio(x['n1'], x['n4']) if x['n4'] else '-':>7} "
                         f"{x['stage']:>12.2f} {x['stage'] / x['n1']:>11.2f} {x['stage1']:>13.2f} {x['stage1'] / x['n1']:>12.2f}")
    if not a.skip_rewrite and len(a.engines) == 2:
        h, v = r["hf"], r["vllm"]
        lines.append(f"{'vllm/hf':>6} {'':>6} {ratio(v['engine_rows'], h['engine_rows']):>13} "
                     f"{ratio(v['tokens'], h['tokens']):>9} {ratio(v['n1'], h['n1']):>10} {'':>8} "
                     f"{ratio(v['n4'] or 0, h['n4'] or 0):>10} {'':>8} {'':>7} {ratio(v['stage'], h['stage']):>12} {'':>11} "
                     f"{ratio(v['stage1'], h['stage1']):>13}")
    if a.captioner:
        print(f"caption: {a.images} CC12M images, model {a.captioner}", flush=True)
        c = {row["engine"]: row for row in caption_rows(a, spark, base)}
        head = f"{'engine':>6} {'load':>6} {'standalone img/s':>16} {'stage img/s':>11} {'stage/alone':>11}"
        lines += ["", f"caption, {a.images} images", head, "-" * len(head)]
        for e in a.engines:
            x = c[e]
            lines.append(f"{e:>6} {x['load']:>5.0f}s {x['alone']:>16.2f} {x['stage']:>11.2f} {x['stage'] / x['alone']:>11.2f}")
        if len(a.engines) == 2:
            lines.append(f"{'vllm/hf':>6} {'':>6} {ratio(c['vllm']['alone'], c['hf']['alone']):>16} "
                         f"{ratio(c['vllm']['stage'], c['hf']['stage']):>11}")
    lines += ["", "n4 cost = n=1 rows/s / n=4 rows/s (target <= 4x); stage/alone target >= 0.9; other plan: "
              "rewrite.partitions=2 for vllm (one one-thread engine per core), 1 for hf (one task, both threads); "
              f"load average at end {os.getloadavg()[0]:.1f}"]
    print("\n".join(lines))
    spark.stop()


if __name__ == "__main__":
    main()
