"""The paper's comparison in miniature: CLIP on AltText only, on VeCLIP's mix, on VeCap only and on
the VLM captions only (the recaptioning baseline), at several relevant-AltText rates, plus a sweep of
the mix at one rate; each arm with the same model, steps and data, several seeds.

    python -m veclip.demo.reproduce --out ./work/reproduce                 # the full run (~1 h on 2 cores)
    python -m veclip.demo.reproduce --out /tmp/repro --quick               # minutes: checks the whole path
    make reproduce                                                         # the full run, out=./work/reproduce
    make reproduce REPRODUCE_ARGS=--publish                                # ... then into README.md + docs/

For each rate r in --rates: a noisy crawl of --n images whose AltTexts name the object for a share r
of them (veclip.demo.crawl, the same images at every rate), run through the real pipeline
(ingest -> dedupe -> caption with the demo captioner -> rewrite with SmolLM2 -> gold; the same stage
functions as `spark-submit jobs/rewrite.py`). Then for each p_vecap in --p and seed in --seeds: train
CLIP (veclip.train, --model, --steps) on that gold table, where each sample's text is the VeCap with
probability p, else the AltText; the caption-only arm trains on a copy of gold whose `vecap` column is
the caption, at p = 1; at --sweep-rate the mix also runs at every p of --sweep. Each final checkpoint
is evaluated (veclip.evaluate) on the held-out "test" parts: zero-shot top-1 per dataset, image<->text
retrieval R@1/5/10 against the ground-truth descriptive captions (veclip.demo.describe), and the
knowledge probe: zero-shot with prompts built from names only the crawl's AltTexts use
(veclip.demo.crawl.probe_names, held out of the captioner's vocabulary). Each arm also records which
texts it trained on: LLM fusions, fallback VeCaps, captions or AltTexts (mixing.choose_text over the
epochs it ran, with the vecap table's fallback_used).

Resumable: each pipeline writes <out>/rate-R/pipeline.json and each arm <out>/arms/<arm>.json when
done; a rerun skips what is finished. Written at the end (and after every arm): results.csv (one row
per arm), summary.csv and summary.md (mean ± std over seeds, the training texts' sources, a paragraph
generated from the numbers, the paper's small-scale rows) and results.png (with the mix sweep).
MLflow is off (the JSON files are the record). `--publish` then writes summary.md into
the README's "Does it work?" block and results.png to docs/, so the README's figures are this run's.
A rerun into the same --out with other n/steps/batch/lr/model/eval_n is refused (its arms would mix).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import pandas as pd

from veclip.files import REPO_ROOT

log = logging.getLogger("veclip.demo.reproduce")

README = str(REPO_ROOT / "README.md")
RETRIEVAL = "demo-captions"
SHOWN = [("zero-shot top-1", "zeroshot_top1"), ("knowledge probe top-1", "probe_top1"), ("I2T R@1", f"{RETRIEVAL}/i2t_r1"), ("I2T R@5", f"{RETRIEVAL}/i2t_r5"),
         ("I2T R@10", f"{RETRIEVAL}/i2t_r10"), ("T2I R@1", f"{RETRIEVAL}/t2i_r1"), ("T2I R@5", f"{RETRIEVAL}/t2i_r5"),
         ("T2I R@10", f"{RETRIEVAL}/t2i_r10")]
PAPER = """The paper's small-scale rows (VeCLIP, arXiv 2310.07699, ViT-B/16 trained on 3M web pairs;
**their numbers, not ours**): ImageNet zero-shot top-1 5.46 (CLIP, AltText) -> 15.98 (VeCLIP);
COCO I2T R@1 5.46 -> 22.30 (the figures our issue quotes; check the paper's tables for the rest)."""


VECAP, CAPTION = "vecap", "caption"     # an arm's text: the AltText/VeCap mix at p_vecap, or the VLM caption
SHARES = ("fusion", "fallback", "caption", "alt_text")   # where an arm's training texts came from
PROBE_TEMPLATES = ("a photo of {}.", "{}")
EVALUATION = "2+probe-1"                # crawl.EVAL_VERSION + the probe's; another value re-evaluates arms


@dataclass(frozen=True)
class Plan:
    out: str
    rates: tuple[float, ...] = (0.1, 0.5)
    p_vecap: tuple[float, ...] = (0.0, 0.5, 1.0)
    sweep_rate: float = 0.5        # the rate of the mix sweep (added to rates when missing)
    sweep: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    n: int = 300                   # distinct crawl images per rate
    steps: int = 250               # optimizer steps per arm
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 25
    model: str = "veclip-tiny"
    eval_n: int = 500              # held-out test images per dataset
    captioner_dir: Optional[str] = None

    @property
    def captioner(self) -> str:
        return self.captioner_dir or os.path.expanduser("~/.cache/veclip/models/demo-captioner")

    @property
    def all_rates(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.rates) | {self.sweep_rate}))


QUICK = dict(rates=(0.1, 0.6), p_vecap=(0.0, 1.0), sweep_rate=0.6, sweep=(0.0, 0.5, 1.0), seeds=(0,), n=40,
             steps=20, batch_size=16, warmup=4, eval_n=50)


def say(msg: str) -> None:
    log.info(msg)
    print(f"[reproduce] {time.strftime('%H:%M:%S')} {msg}", flush=True)


# The rewrite of the demos (`make demo` passes the same in scripts/demo.sh): vLLM, best of 6 candidates
# (on the demo crawl n = 1 / 4 / 6 leave 65% / 34% / 29% of the VeCaps as the fallback).
DEMO_REWRITE = ("rewrite.engine=vllm", "rewrite.num_candidates=6")


def config(plan: Plan, root: str, *extra: str):
    from veclip.config import load_config

    return load_config(None,
                       [f"paths.root={root}", "mlflow.enabled=false", "spark.master=local[2]",
                        "spark.shuffle_partitions=2", f"caption.model={plan.captioner}", *DEMO_REWRITE, *extra])


def rate_dir(plan: Plan, rate: float) -> str:
    return os.path.join(plan.out, f"rate-{rate:g}")


# -- data: crawl -> pipeline -> gold, once per rate -------------------------------------------------
def prepare_rate(plan: Plan, rate: float, spark) -> dict:
    """Crawl and pipeline of one rate (skipped when pipeline.json says it finished)."""
    from veclip.demo.crawl import build_crawl
    from veclip.stages import PIPELINE, AccountingError, run_reported

    folder = rate_dir(plan, rate)
    done = os.path.join(folder, "pipeline.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    crawl = build_crawl(os.path.join(folder, "crawl"), n=plan.n, relevant=rate, seed=0)
    cfg = config(plan, os.path.join(folder, "root"), f"ingest.inputs={crawl['inputs']}")
    say(f"rate {rate:g}: pipeline on {crawl['samples']} crawled samples ({crawl['relevant_originals']} relevant "
        f"AltTexts of {plan.n})")
    t0 = time.time()
    try:
        report = run_reported(PIPELINE, cfg, spark, job="pipeline", stages=None, retry_errors=False)
    except AccountingError as e:
        raise RuntimeError(f"reproduce: the pipeline's accounting for rate {rate:g} does not add up: {e.broken}") from e
    result = {"rate": rate, "root": cfg.paths.root, "seconds": round(time.time() - t0, 1), "crawl": crawl,
              "counts": dict(report.counts), "stage_seconds": {k: v for k, v in report.details.items()
                                                               if k.endswith("seconds")}}
    with open(done, "w") as f:
        json.dump(result, f, indent=1, default=str)
    say(f"rate {rate:g}: pipeline done in {result['seconds']:.0f} s ({result['stage_seconds']})")
    return result


def caption_root(plan: Plan, rate: float, spark) -> str:
    """A paths.root whose gold table is the rate's gold with `vecap` = the caption (the caption-only arm
    trains on it at p_vecap = 1); written once, plain Parquet like gold (no deletion vectors)."""
    from pyspark.sql import functions as F

    from veclip.tables import Tables

    root = os.path.join(rate_dir(plan, rate), "caption-root")
    done = os.path.join(root, "caption-gold.json")
    if not os.path.isfile(done):
        gold = Tables(config(plan, os.path.join(rate_dir(plan, rate), "root")), spark).read("gold")
        Tables(config(plan, root), spark).overwrite("gold", gold.withColumn("vecap", F.col("caption")),
                                                    {"delta.enableDeletionVectors": "false"})
        with open(done, "w") as f:
            json.dump({"from": os.path.join(rate_dir(plan, rate), "root"), "rows": gold.count()}, f)
    return root


def rate_texts(plan: Plan, rate: float, spark) -> pd.DataFrame:
    """The rate's gold texts (no images), written once to rate-R/texts.parquet: key, class_name (from the
    crawl's manifest), alt_text, caption, vecap and fallback_used (the vecap table's; null: no VeCap)."""
    from pyspark.sql import functions as F

    from veclip.tables import Tables

    path = os.path.join(rate_dir(plan, rate), "texts.parquet")
    if not os.path.isfile(path):
        cfg = config(plan, os.path.join(rate_dir(plan, rate), "root"))
        tables = Tables(cfg, spark)
        vecap = (tables.read("vecap").where(F.col("rewriter") == cfg.rewrite.rewriter_id).where("error IS NULL")
                 .select("key", "fallback_used"))
        texts = (tables.read("gold").select("key", "alt_text", "caption", "vecap")
                 .join(vecap, "key", "left").toPandas())
        manifest = pd.read_parquet(os.path.join(rate_dir(plan, rate), "crawl", "manifest.parquet"),
                                   columns=["key", "class_name"])
        texts = texts.merge(manifest, on="key", how="left").sort_values("key").reset_index(drop=True)
        texts.to_parquet(path, index=False)
    return pd.read_parquet(path)


def text_shares(texts: pd.DataFrame, text: str, p: float, seed: int, epochs: int) -> dict:
    """Percent of an arm's training texts that were LLM fusions, fallback VeCaps, captions and AltTexts:
    the trainer's own choice (veclip.train.mixing.choose_text) for every gold row in each epoch it ran."""
    from veclip.train.mixing import ALT_TEXT, VECAP as CHOSE_VECAP, choose_text

    counts = dict.fromkeys(SHARES, 0)
    for row in texts.itertuples():
        other = row.caption if text == CAPTION else row.vecap
        fallback = pd.notna(row.fallback_used) and bool(row.fallback_used)
        kind = CAPTION if text == CAPTION else ("fallback" if fallback else "fusion")
        for epoch in range(max(epochs, 1)):
            _, source = choose_text(row.alt_text, other, 1.0 if text == CAPTION else p, seed, epoch, row.key)
            if source == CHOSE_VECAP:
                counts[kind] += 1
            elif source == ALT_TEXT:
                counts["alt_text"] += 1
    total = max(sum(counts.values()), 1)
    return {k: round(100.0 * v / total, 1) for k, v in counts.items()}


def probe_counts(texts: pd.DataFrame) -> dict:
    """Gold rows whose AltText holds a probe name of its class, and how many of their VeCaps keep one
    (LLM fusions, and fallbacks, which copy the AltText)."""
    from veclip.demo.crawl import probe_mentions

    named = texts[[bool(probe_mentions(a, c or "")) for a, c in zip(texts.alt_text, texts.class_name)]]
    kept = named[[bool(probe_mentions(v, c or "")) for v, c in zip(named.vecap, named.class_name)]]
    fused = kept.fallback_used.eq(False)
    return {"rows": len(texts), "alt_named": len(named), "kept_fusion": int(fused.sum()),
            "kept_fallback": int((~fused).sum()),
            "fusion_rows": int(named.fallback_used.eq(False).sum())}


# -- arms: train + evaluate -------------------------------------------------------------------------
def arm_name(rate: float, p: float, seed: int, text: str = VECAP) -> str:
    return f"rate{rate:g}_caption_seed{seed}" if text == CAPTION else f"rate{rate:g}_p{p:g}_seed{seed}"


def plan_arms(plan: Plan) -> list[tuple[float, str, float, int]]:
    """(rate, text, p_vecap, seed) of every arm: at each rate the --p mixes and caption only, and at the
    sweep rate the --sweep mixes too; every arm with every seed."""
    arms = []
    for rate in plan.all_rates:
        ps = sorted(set(plan.p_vecap) | (set(plan.sweep) if rate == plan.sweep_rate else set()))
        for text, p in [(VECAP, p) for p in ps] + [(CAPTION, 1.0)]:
            arms += [(rate, text, p, seed) for seed in plan.seeds]
    return arms


def train_arm(plan: Plan, rate: float, p: float, seed: int, spark, text: str = VECAP) -> dict:
    from veclip.stages import get, run_reported

    name = arm_name(rate, p, seed, text)
    folder = os.path.join(plan.out, "checkpoints", name)
    if os.path.isdir(folder):           # a half-finished arm from a killed run: start it again
        import shutil
        shutil.rmtree(folder)
    root = caption_root(plan, rate, spark) if text == CAPTION else os.path.join(rate_dir(plan, rate), "root")
    cfg = config(plan, root,
                 f"train.model={plan.model}", f"train.p_vecap={p}", f"train.seed={seed}",
                 f"train.max_steps={plan.steps}", "train.epochs=1000", f"train.batch_size={plan.batch_size}",
                 f"train.lr={plan.lr}", f"train.warmup_steps={plan.warmup}", "train.mode=single",
                 "train.reader_pool=dummy", f"train.checkpoint_dir={folder}", f"train.checkpoint_every={plan.steps}",
                 "train.keep_checkpoints=1", "train.log_every=50")
    report = run_reported(get("train"), cfg, spark, job="train", resume=False)
    return {"checkpoint": report.details["final checkpoint"], "steps": report.counts["steps"],
            "samples": report.counts["samples"], "gold_rows": report.counts["gold_rows"],
            "samples_per_s": report.details["samples/s (steady)"]}


def evaluate_arm(plan: Plan, checkpoint: str, sets: dict, output: str) -> dict:
    from veclip.stages import get, run_reported

    cfg = config(plan, os.path.join(plan.out, "eval-root"), f"eval.model={checkpoint}", f"eval.output={output}",
                 f"eval.zeroshot={json.dumps(sets['zeroshot'])}", f"eval.retrieval={json.dumps(sets['retrieval'])}",
                 "eval.device=cpu")
    run_reported(get("evaluate"), cfg, None, job="evaluate")
    with open(output) as f:
        metrics = json.load(f)["metrics"]
    tops = [v for k, v in metrics.items() if k.endswith("/top1")]
    metrics["zeroshot_top1"] = sum(tops) / len(tops)
    probe = probe_zeroshot(checkpoint, sets)
    metrics.update(probe)
    metrics["probe_top1"] = mean([v for k, v in probe.items() if k.endswith("/top1")])
    metrics["probe_chance"] = mean([v for k, v in probe.items() if k.endswith("/chance")])
    return metrics


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def probe_zeroshot(checkpoint: str, sets: dict, batch_size: int = 64) -> dict:
    """The knowledge probe: per held-out zero-shot set, top-1 (percent) over the test images of the
    classes that have probe names (veclip.demo.crawl.probe_names), each class embedded as the
    normalised mean of its names' prompt embeddings (PROBE_TEMPLATES, e.g. "a photo of Nike
    runners."); `probe/<set>/top1` and `probe/<set>/chance` (100 / classes probed)."""
    import numpy as np
    import torch

    from veclip.config.evaluate import ZeroShotSet
    from veclip.demo.crawl import probe_names
    from veclip.evaluate.embed import embed_images
    from veclip.evaluate.labelled import load_labelled
    from veclip.evaluate.metrics import class_ranks, normalize, recall_at_k
    from veclip.evaluate.models import load_encoder, resolve_model
    from veclip.evaluate.zeroshot import class_embeddings

    encoder = load_encoder(resolve_model(checkpoint), "cpu")
    templates = [t.format for t in PROBE_TEMPLATES]
    names, out = probe_names(), {}
    for entry in sets["zeroshot"]:
        data = load_labelled(ZeroShotSet(**entry))
        probed = [i for i, c in enumerate(data.classnames) if names.get(c.lower())]
        classes = normalize(torch.stack([
            class_embeddings(encoder, list(names[data.classnames[i].lower()]), templates, 256,
                             f"probe {data.name}").mean(0) for i in probed]))
        images, ok, _ = embed_images(encoder, data.image_batches(batch_size), len(data.labels),
                                     f"probe {data.name} images")
        labels = data.labels[ok]
        keep = np.isin(labels, probed)
        index = {c: j for j, c in enumerate(probed)}
        truth = torch.as_tensor([index[int(y)] for y in labels[keep]])
        ranks = class_ranks(images[torch.as_tensor(keep)], classes, truth)
        out[f"probe/{data.name}/top1"] = recall_at_k(ranks, (1,))[1]
        out[f"probe/{data.name}/chance"] = 100.0 / len(probed)
    return out


def run_arm(plan: Plan, rate: float, p: float, seed: int, sets: dict, spark, text: str = VECAP,
            texts: Optional[pd.DataFrame] = None) -> dict:
    """Train and evaluate one arm; a finished arm is read back, and only re-evaluated when the
    evaluation changed since (EVALUATION) and its checkpoint is still there. With `texts` (rate_texts)
    the arm's `texts` (text_shares) are added when missing."""
    name = arm_name(rate, p, seed, text)
    path = os.path.join(plan.out, "arms", f"{name}.json")
    output = os.path.join(plan.out, "eval", f"{name}.json")
    result = None
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
        if result.get("eval_version") == EVALUATION and ("texts" in result or texts is None):
            return result
        if result.get("eval_version") != EVALUATION and not os.path.isfile(result["checkpoint"]):
            result = None
    if result is None:
        t0 = time.time()
        trained = train_arm(plan, rate, p, seed, spark, text)
        result = {"arm": name, "rate": rate, "text": text, "p_vecap": p, "seed": seed, **trained,
                  "train_seconds": round(time.time() - t0, 1)}
    if result.get("eval_version") != EVALUATION:
        t1 = time.time()
        result["metrics"] = evaluate_arm(plan, result["checkpoint"], sets, output)
        result.update(eval_seconds=round(time.time() - t1, 1), eval_version=EVALUATION)
    if texts is not None:
        epochs = -(-int(result["samples"]) // max(len(texts), 1))
        result["texts"] = text_shares(texts, text, p, seed, epochs)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


# Settings that change what a finished arm or pipeline means: a rerun into the same --out must keep them.
FIXED = ("n", "steps", "batch_size", "lr", "warmup", "model", "eval_n")


def check_plan(plan: Plan) -> None:
    """Refuse to resume an --out folder whose finished arms were made with other settings."""
    path = os.path.join(plan.out, "plan.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        before = json.load(f)
    changed = {k: (before.get(k), getattr(plan, k)) for k in FIXED if before.get(k) != getattr(plan, k)}
    if changed:
        diff = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items())
        raise SystemExit(f"reproduce: {plan.out} holds results made with other settings ({diff}); "
                         "use another --out, or delete the folder to start again")


# -- results ----------------------------------------------------------------------------------------
def results_frame(results: Sequence[dict]) -> pd.DataFrame:
    rows = [{"arm": r["arm"], "rate": r["rate"], "text": r.get("text", VECAP), "p_vecap": r["p_vecap"],
             "seed": r["seed"], **r["metrics"], **{f"texts_{k}": v for k, v in r.get("texts", {}).items()}}
            for r in results]
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (rate, text, p_vecap) of the shown metrics; the mean of the training
    texts' shares (texts_*) and of the probe's chance level where present."""
    cols = [c for _, c in SHOWN if c in df]
    g = df.groupby(["rate", "text", "p_vecap"])
    mean, std, n = g[cols].mean(), g[cols].std(ddof=1).fillna(0.0), g.size()
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    extra = [c for c in df if c.startswith("texts_") or c == "probe_chance"]
    if extra:
        out = out.join(g[extra].mean())
    out["seeds"] = n
    order = {VECAP: 0, CAPTION: 1}   # the mixes first, then caption only
    return out.reset_index().sort_values(["rate", "text", "p_vecap"], key=lambda c: c.map(order) if c.name == "text"
                                         else c, ignore_index=True)


def span(values: pd.Series) -> str:
    """"30%" or "29-35%" for the min and max of percentages."""
    lo, hi = f"{values.min():.0f}", f"{values.max():.0f}"
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def arm_label(text: str, p: float) -> str:
    if text == CAPTION:
        return "caption only (recaptioning)"
    return {0.0: "AltText only (CLIP)", 0.5: "mix (VeCLIP)", 1.0: "VeCap only"}.get(p, f"mix p_vecap={p:g}")


def shares_cell(row) -> str:
    """"fusion / fallback / caption / AltText" percentages of an arm's training texts."""
    if not all(f"texts_{k}" in row and pd.notna(row[f"texts_{k}"]) for k in SHARES):
        return "-"
    return " / ".join(f"{row[f'texts_{k}']:.0f}" for k in SHARES)


def data_table(pipelines: Sequence[dict], probes: Optional[dict] = None) -> str:
    """What each rate's pipeline made of its crawl: rows, how many VeCaps the LLM wrote, time; with
    `probes` (rate -> probe_counts) also the gold rows whose AltText holds a probe name, and how many of
    their VeCaps keep one."""
    head = "| relevant AltTexts | crawled | gold rows | LLM VeCaps (rest: fallback) | pipeline |"
    if probes:
        head += " AltTexts with a probe name | ... kept by the LLM fusion | ... by the fallback |"
    lines = [head, "|" + " --- |" * head.count(" |")]
    for p in pipelines:
        c = p["counts"]
        done = c.get("rewrite.rewritten", 0) + c.get("rewrite.fallback", 0)
        line = (f"| {p['rate']:.0%} | {p['crawl']['samples']} | {c.get('gold.rows', 0)} | "
                f"{c.get('rewrite.rewritten', 0)} ({c.get('rewrite.rewritten', 0) / max(done, 1):.0%}) | "
                f"{p['seconds'] / 60:.0f} min |")
        if probes and p["rate"] in probes:
            q = probes[p["rate"]]
            line += f" {q['alt_named']} | {q['kept_fusion']} (of {q['fusion_rows']} fused) | {q['kept_fallback']} |"
        lines.append(line)
    return "\n".join(lines)


def markdown(summary: pd.DataFrame, plan: Plan, pipelines: Sequence[dict] = (), results: Sequence[dict] = (),
             images: Optional[dict] = None, probes: Optional[dict] = None) -> str:
    with_texts = any(c.startswith("texts_") for c in summary)
    head = ["relevant AltTexts", "text used in training"] + [t for t, c in SHOWN if f"{c}_mean" in summary]
    head += ["training texts % (LLM fusion / fallback / caption / AltText)"] if with_texts else []
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in summary.iterrows():
        cells = [f"{row.rate:.0%}", arm_label(row.text, row.p_vecap)]
        cells += [f"{row[f'{c}_mean']:.1f} ± {row[f'{c}_std']:.1f}" for t, c in SHOWN if f"{c}_mean" in summary]
        cells += [shares_cell(row)] if with_texts else []
        lines.append("| " + " | ".join(cells) + " |")
    setup = (f"{plan.model}, {plan.steps} steps of batch {plan.batch_size}, {plan.n} crawl images per rate, "
             f"seeds {', '.join(map(str, plan.seeds))} (mean ± std); zero-shot top-1 = mean over the test "
             f"datasets ({plan.eval_n} test images each); retrieval: image<->text among the ground-truth "
             f"descriptions of those test images, one image per distinct description")
    if images:
        setup += " (" + ", ".join(f"{name} {c['retrieval']}" for name, c in images.items()) + " images)"
    setup += "."
    if "probe_top1_mean" in summary:
        setup += (f" Knowledge probe: zero-shot top-1 with prompts built from names that only the crawl's "
                  f"AltTexts use, never the captioner (e.g. \"a photo of Nike runners.\"), on the same test "
                  f"images of the classes that have such names (chance {summary.probe_chance.mean():.1f}%).")
    text = "\n".join(lines) + f"\n\n{setup}\n"
    if len(summary):
        text += f"\n{findings(summary, plan, probes)}\n"
    if pipelines:
        arm_s = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in results)
        pipe_s = sum(p["seconds"] for p in pipelines)
        text += (f"\n{data_table(pipelines, probes)}\n\nCompute: pipelines {pipe_s / 60:.0f} min, {len(results)} arms "
                 f"{arm_s / 60:.0f} min (train + evaluate), {(pipe_s + arm_s) / 60:.0f} min in all on "
                 f"{os.cpu_count()} CPU cores.\n")
    return text + f"\n{PAPER}\n"


def arm_row(summary: pd.DataFrame, rate: float, text: str, p: float) -> Optional[pd.Series]:
    rows = summary[(summary.rate == rate) & (summary.text == text) & (summary.p_vecap == p)]
    return None if rows.empty else rows.iloc[0]


def difference(a: pd.Series, b: pd.Series, col: str) -> tuple[float, Optional[float]]:
    """(mean of a - mean of b, its standard error sqrt(s_a²/n_a + s_b²/n_b) over seeds; None with one seed)."""
    d = a[f"{col}_mean"] - b[f"{col}_mean"]
    if min(a.seeds, b.seeds) < 2:
        return d, None
    return d, (a[f"{col}_std"] ** 2 / a.seeds + b[f"{col}_std"] ** 2 / b.seeds) ** 0.5


def beyond_noise(d: float, se: Optional[float]) -> bool:
    """The rule the paragraph uses: a difference is beyond seed noise when it exceeds twice its standard error."""
    return se is not None and abs(d) > 2 * se


def _vs(a: pd.Series, b: pd.Series, col: str) -> str:
    d, se = difference(a, b, col)
    if se is None:
        return f"{d:+.1f} points (one seed: no estimate of seed noise)"
    verdict = "beyond seed noise" if beyond_noise(d, se) else "within seed noise"
    return f"{d:+.1f} points, standard error {se:.1f}: {verdict}"


def findings(summary: pd.DataFrame, plan: Plan, probes: Optional[dict] = None) -> str:
    """A plain paragraph generated from the summary: what the numbers show and what they do not."""
    def m(row, col):
        return f"{row[f'{col}_mean']:.1f}"

    out, probe = [], "probe_top1_mean" in summary
    for rate in sorted(summary.rate.unique()):
        arms = [(arm_label(t, p), arm_row(summary, rate, t, p)) for t, p in
                ((VECAP, 0.0), (CAPTION, 1.0), (VECAP, 1.0), (VECAP, 0.5))]
        arms = [(label, row) for label, row in arms if row is not None]
        if not arms:
            continue
        said = ", ".join(f"{label} {m(row, 'zeroshot_top1')}" for label, row in arms)
        text = f"At {rate:.0%} relevant AltTexts, class-name zero-shot top-1 is {said}"
        if probe:
            text += "; on the knowledge probe " + ", ".join(f"{label} {m(row, 'probe_top1')}" for label, row in arms)
        out.append(text + ".")
        vecap, caption = arm_row(summary, rate, VECAP, 1.0), arm_row(summary, rate, CAPTION, 1.0)
        if vecap is not None and caption is not None:
            text = f"VeCap only minus caption only: zero-shot {_vs(vecap, caption, 'zeroshot_top1')}"
            if probe:
                text += f"; knowledge probe {_vs(vecap, caption, 'probe_top1')}"
            out.append(text + ".")
    if probe:
        pairs = [(arm_row(summary, r, VECAP, 1.0), arm_row(summary, r, CAPTION, 1.0)) for r in summary.rate.unique()]
        pairs = [(v, c) for v, c in pairs if v is not None and c is not None]
        wins = [v.rate for v, c in pairs if beyond_noise(*difference(v, c, "probe_top1")) and
                difference(v, c, "probe_top1")[0] > 0]
        if pairs:
            out.append(("So VeCap beats caption-only on the knowledge probe beyond seed noise at "
                        + ", ".join(f"{r:.0%}" for r in sorted(wins)) + " relevant AltTexts.") if wins else
                       "So in this run VeCap does not beat caption-only on the knowledge probe beyond seed noise "
                       "at any rate.")
        out.append(f"Chance on the probe is {summary.probe_chance.mean():.1f}%.")
    sweep = summary[(summary.rate == plan.sweep_rate) & (summary.text == VECAP)].sort_values("p_vecap")
    if len(sweep) > 2:
        cols = [("zero-shot", "zeroshot_top1")] + ([("probe", "probe_top1")] if probe else [])
        parts = []
        for title, col in cols:
            best = sweep.loc[sweep[f"{col}_mean"].idxmax()]
            parts.append(f"{title} " + ", ".join(f"{m(r, col)}" for _, r in sweep.iterrows())
                         + f" (highest at p = {best.p_vecap:g})")
        out.append(f"The mix sweep at {plan.sweep_rate:.0%} (p_vecap " +
                   ", ".join(f"{p:g}" for p in sweep.p_vecap) + "): " + "; ".join(parts) + ".")
    vecap_rows = summary[(summary.text == VECAP) & (summary.p_vecap == 1.0)]
    if "texts_fusion" in summary and len(vecap_rows):
        out.append(f"VeCap only trains on {span(vecap_rows.texts_fusion)} LLM fusions and "
                   f"{span(vecap_rows.texts_fallback)} "
                   "fallbacks (`caption, AltText`; the rest are AltTexts of rows without a VeCap), so its "
                   "difference from caption only is the fusion's and the fallback's appended AltText together.")
    if probes:
        named = "; ".join(f"{r:.0%}: {q['alt_named']} of {q['rows']} gold AltTexts hold a probe name, "
                          f"{q['kept_fusion']} LLM fusions and {q['kept_fallback']} fallbacks keep it"
                          for r, q in sorted(probes.items()))
        out.append(f"The probe rests on few examples ({named}).")
    out.append(f"What this does not show: anything at scale ({plan.n} synthetic-crawl images per rate, "
               f"{plan.model}, {plan.steps} steps, {len(plan.seeds)} seed(s)); and the probe's names come from "
               "a fixed list the crawl draws from, so it measures whether AltText words reach the text encoder, "
               "not open-world knowledge.")
    return " ".join(out)


def plot(summary: pd.DataFrame, path: str, sweep_rate: Optional[float] = None) -> None:
    """Per shown metric a panel over the rates (one line per arm present at every rate), and the mix
    sweep at sweep_rate (zero-shot and probe over p_vecap, caption only as dashed lines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("zero-shot top-1", "knowledge probe top-1", "I2T R@1", "T2I R@1")
    panels = [(t, c) for t, c in SHOWN if t in names and f"{c}_mean" in summary]
    sweep = summary[(summary.rate == sweep_rate) & (summary.text == VECAP)].sort_values("p_vecap")
    with_sweep = len(sweep) > 2
    fig, axes = plt.subplots(1, len(panels) + with_sweep, figsize=(4.2 * (len(panels) + with_sweep), 3.6))
    axes_list = list(getattr(axes, "flat", [axes]))
    n_rates = summary.rate.nunique()
    for ax, (title, col) in zip(axes_list, panels):
        for (text, p), part in summary.groupby(["text", "p_vecap"]):
            if len(part) == n_rates or n_rates == 1:
                ax.errorbar(part.rate * 100, part[f"{col}_mean"], yerr=part[f"{col}_std"], marker="o", capsize=3,
                            label=arm_label(text, p))
        ax.set(title=title, xlabel="relevant AltTexts in the crawl (%)", ylabel="%")
        ax.grid(alpha=0.3)
    if with_sweep:
        ax = axes_list[-1]
        caption = summary[(summary.rate == sweep_rate) & (summary.text == CAPTION)]
        for title, col in (("zero-shot", "zeroshot_top1"), ("knowledge probe", "probe_top1")):
            if f"{col}_mean" not in summary:
                continue
            line = ax.errorbar(sweep.p_vecap, sweep[f"{col}_mean"], yerr=sweep[f"{col}_std"], marker="o",
                               capsize=3, label=f"{title}, mix")
            if len(caption):
                ax.axhline(caption[f"{col}_mean"].iloc[0], ls="--", color=line[0].get_color(),
                           label=f"{title}, caption only")
        ax.set(title=f"mix sweep at {sweep_rate:.0%} relevant AltTexts", xlabel="p_vecap (share of VeCaps)",
               ylabel="%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes_list[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(plan: Plan, results: Sequence[dict], pipelines: Sequence[dict] = (),
                  images: Optional[dict] = None, probes: Optional[dict] = None) -> Optional[str]:
    if not results:
        return None
    df = results_frame(results)
    df.to_csv(os.path.join(plan.out, "results.csv"), index=False)
    summary = summarise(df)
    summary.to_csv(os.path.join(plan.out, "summary.csv"), index=False)
    text = markdown(summary, plan, pipelines, results, images, probes)
    with open(os.path.join(plan.out, "summary.md"), "w") as f:
        f.write(text)
    plot(summary, os.path.join(plan.out, "results.png"), plan.sweep_rate)
    return text


README_START, README_END = "<!-- reproduce-results:start -->", "<!-- reproduce-results:end -->"
PUBLISHED_PLOT = "docs/reproduce-results.png"


def plan_command(plan: Plan) -> str:
    """`make reproduce`, with REPRODUCE_ARGS for every setting that differs from the defaults."""
    flags = {"rates": "--rates", "p_vecap": "--p", "sweep_rate": "--sweep-rate", "sweep": "--sweep",
             "seeds": "--seeds", "n": "--n", "steps": "--steps", "batch_size": "--batch-size", "eval_n": "--eval-n"}
    default = Plan(out=plan.out)
    args = []
    for field, flag in flags.items():
        value = getattr(plan, field)
        if value != getattr(default, field):
            args.append(f"{flag} {','.join(f'{v:g}' for v in value) if isinstance(value, tuple) else value}")
    return "make reproduce" + (f' REPRODUCE_ARGS="{" ".join(args)}"' if args else "")


def publish(plan: Plan, text: str, readme: str = README) -> None:
    """Put summary.md between the README's reproduce-results markers and results.png in docs/."""
    import shutil

    with open(readme) as f:
        doc = f.read()
    if README_START not in doc or README_END not in doc:
        raise SystemExit(f"reproduce --publish: {readme} has no {README_START} ... {README_END} block")
    head, rest = doc.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    command = plan_command(plan)
    block = (f"{README_START}\nFrom `{command}` ({time.strftime('%Y-%m-%d')}), written by `--publish`:\n\n"
             f"{text.strip()}\n\n![results]({PUBLISHED_PLOT})\n{README_END}")
    with open(readme, "w") as f:
        f.write(head + block + tail)
    target = os.path.join(os.path.dirname(readme), PUBLISHED_PLOT)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(os.path.join(plan.out, "results.png"), target)
    say(f"published: {readme} and {target}")


# -- the run ----------------------------------------------------------------------------------------
def run(plan: Plan, publish_to: Optional[str] = None) -> str:
    from veclip.demo.captioner import ensure_captioner
    from veclip.demo.crawl import write_eval_sets
    from veclip.spark import get_spark

    os.makedirs(plan.out, exist_ok=True)
    check_plan(plan)
    with open(os.path.join(plan.out, "plan.json"), "w") as f:
        json.dump(asdict(plan), f, indent=1)
    t0 = time.time()
    say(f"captioner: {ensure_captioner(plan.captioner)}")
    sets = write_eval_sets(os.path.join(plan.out, "eval-sets"), plan.eval_n)
    spark = get_spark(config(plan, os.path.join(plan.out, "spark-root")))
    try:
        pipelines = [prepare_rate(plan, rate, spark) for rate in plan.all_rates]
        texts = {rate: rate_texts(plan, rate, spark) for rate in plan.all_rates}
        probes = {rate: probe_counts(t) for rate, t in texts.items()}
        arms = plan_arms(plan)
        results = []
        for i, (rate, text, p, seed) in enumerate(arms, 1):
            result = run_arm(plan, rate, p, seed, sets, spark, text, texts[rate])
            results.append(result)
            m = result["metrics"]
            left = (time.time() - t0) / i * (len(arms) - i)
            say(f"arm {i}/{len(arms)} {result['arm']}: zero-shot {m['zeroshot_top1']:.1f}%, probe "
                f"{m['probe_top1']:.1f}%, I2T R@1 {m[f'{RETRIEVAL}/i2t_r1']:.1f}%, T2I R@1 "
                f"{m[f'{RETRIEVAL}/t2i_r1']:.1f}% (~{left / 60:.0f} min left)")
            write_results(plan, results, pipelines, sets.get("images"), probes)
    finally:
        spark.stop()
    text = write_results(plan, results, pipelines, sets.get("images"), probes)
    if publish_to:
        publish(plan, text, publish_to)
    say(f"done in {(time.time() - t0) / 60:.1f} min: {plan.out}/summary.md, results.csv, results.png\n{text}")
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    def floats(s):
        return tuple(float(x) for x in s.split(",") if x)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.getcwd(), "work", "reproduce"))
    p.add_argument("--quick", action="store_true", help="a few minutes: 2 rates, p 0 and 1 (sweep 0, 0.5, 1 at "
                   "0.6), 1 seed, tiny data")
    p.add_argument("--rates", type=floats)
    p.add_argument("--p", type=floats, help="p_vecap values at every rate (default 0,0.5,1)")
    p.add_argument("--sweep-rate", type=float, help="the rate of the mix sweep (default 0.5)")
    p.add_argument("--sweep", type=floats, help="p_vecap values of the mix sweep (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",") if x))
    p.add_argument("--n", type=int, help="distinct crawl images per rate")
    p.add_argument("--steps", type=int, help="training steps per arm")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-n", type=int, help="held-out test images per dataset")
    p.add_argument("--publish", nargs="?", const=README, metavar="README",
                   help="at the end, write summary.md into the README's results block and results.png to docs/")
    p.add_argument("--captioner", help="demo captioner folder (default: ~/.cache/veclip/models/demo-captioner, shared with make demo)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fields = dict(QUICK) if a.quick else {}
    given = {"rates": a.rates, "p_vecap": a.p, "sweep_rate": a.sweep_rate, "sweep": a.sweep, "seeds": a.seeds,
             "n": a.n, "steps": a.steps, "batch_size": a.batch_size, "eval_n": a.eval_n, "captioner_dir": a.captioner}
    fields.update({k: v for k, v in given.items() if v is not None})
    run(Plan(out=os.path.abspath(a.out), **fields), publish_to=a.publish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
