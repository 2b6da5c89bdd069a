"""The paper's comparison in miniature: CLIP on AltText only, on VeCLIP's mix and on VeCap only,
at several relevant-AltText rates, each arm with the same model, steps and data, several seeds.

    python -m veclip.demo.reproduce --out ./work/reproduce                 # the full run (~1 h on 2 cores)
    python -m veclip.demo.reproduce --out /tmp/repro --quick               # minutes: checks the whole path
    make reproduce                                                         # the full run, out=./work/reproduce
    make reproduce REPRODUCE_ARGS=--publish                                # ... then into README.md + docs/

For each rate r in --rates: a noisy crawl of --n images whose AltTexts name the object for a share r
of them (veclip.demo.crawl, the same images at every rate), run through the real pipeline
(ingest -> dedupe -> caption with the demo captioner -> rewrite with SmolLM2 -> gold; the same stage
functions as `spark-submit jobs/rewrite.py`). Then for each p_vecap in --p and seed in --seeds: train
CLIP (veclip.train, --model, --steps) on that gold table, where each sample's text is the VeCap with
probability p, else the AltText, and evaluate the final checkpoint (veclip.evaluate) on the held-out
"test" parts: zero-shot top-1 per dataset, and image<->text retrieval R@1/5/10 against the
ground-truth descriptive captions (veclip.demo.describe).

Resumable: each pipeline writes <out>/rate-R/pipeline.json and each arm <out>/arms/<arm>.json when
done; a rerun skips what is finished. Written at the end (and after every arm): results.csv (one row
per arm), summary.csv and summary.md (mean ± std over seeds, beside the paper's small-scale rows)
and results.png. MLflow is off (the JSON files are the record). `--publish` then writes summary.md into
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

log = logging.getLogger("veclip.demo.reproduce")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETRIEVAL = "demo-captions"
SHOWN = [("zero-shot top-1", "zeroshot_top1"), ("I2T R@1", f"{RETRIEVAL}/i2t_r1"), ("I2T R@5", f"{RETRIEVAL}/i2t_r5"),
         ("I2T R@10", f"{RETRIEVAL}/i2t_r10"), ("T2I R@1", f"{RETRIEVAL}/t2i_r1"), ("T2I R@5", f"{RETRIEVAL}/t2i_r5"),
         ("T2I R@10", f"{RETRIEVAL}/t2i_r10")]
PAPER = """The paper's small-scale rows (VeCLIP, arXiv 2310.07699, ViT-B/16 trained on 3M web pairs;
**their numbers, not ours**): ImageNet zero-shot top-1 5.46 (CLIP, AltText) -> 15.98 (VeCLIP);
COCO I2T R@1 5.46 -> 22.30 (the figures our issue quotes; check the paper's tables for the rest)."""


@dataclass(frozen=True)
class Plan:
    out: str
    rates: tuple[float, ...] = (0.1, 0.3, 0.5)
    p_vecap: tuple[float, ...] = (0.0, 0.5, 1.0)
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


QUICK = dict(rates=(0.1, 0.6), p_vecap=(0.0, 1.0), seeds=(0,), n=40, steps=20, batch_size=16, warmup=4, eval_n=50)


def say(msg: str) -> None:
    log.info(msg)
    print(f"[reproduce] {time.strftime('%H:%M:%S')} {msg}", flush=True)


# The rewrite of the demos (`make demo` passes the same in scripts/demo.sh): vLLM, best of 4 candidates.
DEMO_REWRITE = ("rewrite.engine=vllm", "rewrite.num_candidates=4")


def config(plan: Plan, root: str, *extra: str):
    from veclip.config import load_config

    return load_config(os.path.join(REPO, "conf", "local.yaml"),
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


# -- arms: train + evaluate -------------------------------------------------------------------------
def arm_name(rate: float, p: float, seed: int) -> str:
    return f"rate{rate:g}_p{p:g}_seed{seed}"


def train_arm(plan: Plan, rate: float, p: float, seed: int, spark) -> dict:
    from veclip.stages import get, run_reported

    name = arm_name(rate, p, seed)
    folder = os.path.join(plan.out, "checkpoints", name)
    if os.path.isdir(folder):           # a half-finished arm from a killed run: start it again
        import shutil
        shutil.rmtree(folder)
    cfg = config(plan, os.path.join(rate_dir(plan, rate), "root"),
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
    return metrics


def run_arm(plan: Plan, rate: float, p: float, seed: int, sets: dict, spark) -> dict:
    """Train and evaluate one arm; a finished arm is read back, and only re-evaluated when the
    evaluation sets changed since (EVAL_VERSION) and its checkpoint is still there."""
    from veclip.demo.crawl import EVAL_VERSION

    name = arm_name(rate, p, seed)
    path = os.path.join(plan.out, "arms", f"{name}.json")
    output = os.path.join(plan.out, "eval", f"{name}.json")
    result = None
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
        if result.get("eval_version") == EVAL_VERSION:
            return result
        if not os.path.isfile(result["checkpoint"]):
            result = None
    if result is None:
        t0 = time.time()
        trained = train_arm(plan, rate, p, seed, spark)
        result = {"arm": name, "rate": rate, "p_vecap": p, "seed": seed, **trained,
                  "train_seconds": round(time.time() - t0, 1)}
    t1 = time.time()
    result["metrics"] = evaluate_arm(plan, result["checkpoint"], sets, output)
    result.update(eval_seconds=round(time.time() - t1, 1), eval_version=EVAL_VERSION)
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
    rows = [{"arm": r["arm"], "rate": r["rate"], "p_vecap": r["p_vecap"], "seed": r["seed"], **r["metrics"]}
            for r in results]
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (rate, p_vecap) of the shown metrics."""
    cols = [c for _, c in SHOWN if c in df]
    g = df.groupby(["rate", "p_vecap"])[cols]
    mean, std, n = g.mean(), g.std(ddof=1).fillna(0.0), g.size()
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["seeds"] = n
    return out.reset_index()


def data_table(pipelines: Sequence[dict]) -> str:
    """What each rate's pipeline made of its crawl: rows, how many VeCaps the LLM wrote, time."""
    lines = ["| relevant AltTexts | crawled | gold rows | LLM VeCaps (rest: fallback) | pipeline |",
             "| --- | --- | --- | --- | --- |"]
    for p in pipelines:
        c = p["counts"]
        done = c.get("rewrite.rewritten", 0) + c.get("rewrite.fallback", 0)
        lines.append(f"| {p['rate']:.0%} | {p['crawl']['samples']} | {c.get('gold.rows', 0)} | "
                     f"{c.get('rewrite.rewritten', 0)} ({c.get('rewrite.rewritten', 0) / max(done, 1):.0%}) | "
                     f"{p['seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def markdown(summary: pd.DataFrame, plan: Plan, pipelines: Sequence[dict] = (), results: Sequence[dict] = (),
             images: Optional[dict] = None) -> str:
    label = {0.0: "AltText only (CLIP)", 0.5: "mix (VeCLIP)", 1.0: "VeCap only"}
    head = ["relevant AltTexts", "text used in training"] + [t for t, c in SHOWN if f"{c}_mean" in summary]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in summary.iterrows():
        cells = [f"{row.rate:.0%}", label.get(row.p_vecap, f"p_vecap={row.p_vecap:g}")]
        cells += [f"{row[f'{c}_mean']:.1f} ± {row[f'{c}_std']:.1f}" for t, c in SHOWN if f"{c}_mean" in summary]
        lines.append("| " + " | ".join(cells) + " |")
    setup = (f"{plan.model}, {plan.steps} steps of batch {plan.batch_size}, {plan.n} crawl images per rate, "
             f"seeds {', '.join(map(str, plan.seeds))} (mean ± std); zero-shot top-1 = mean over the test "
             f"datasets ({plan.eval_n} test images each); retrieval: image<->text among the ground-truth "
             f"descriptions of those test images, one image per distinct description")
    if images:
        setup += " (" + ", ".join(f"{name} {c['retrieval']}" for name, c in images.items()) + " images)"
    setup += "."
    text = "\n".join(lines) + f"\n\n{setup}\n"
    if pipelines:
        arm_s = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in results)
        pipe_s = sum(p["seconds"] for p in pipelines)
        text += (f"\n{data_table(pipelines)}\n\nCompute: pipelines {pipe_s / 60:.0f} min, {len(results)} arms "
                 f"{arm_s / 60:.0f} min (train + evaluate), {(pipe_s + arm_s) / 60:.0f} min in all on "
                 f"{os.cpu_count()} CPU cores.\n")
    return text + f"\n{PAPER}\n"


def plot(summary: pd.DataFrame, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, c) for t, c in SHOWN if t in ("zero-shot top-1", "I2T R@1", "T2I R@1") and f"{c}_mean" in summary]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, col) in zip(list(getattr(axes, "flat", [axes])), panels):
        for p, part in summary.groupby("p_vecap"):
            ax.errorbar(part.rate * 100, part[f"{col}_mean"], yerr=part[f"{col}_std"], marker="o", capsize=3,
                        label={0.0: "AltText only", 0.5: "VeCLIP mix (p=0.5)", 1.0: "VeCap only"}.get(p, f"p={p:g}"))
        ax.set(title=title, xlabel="relevant AltTexts in the crawl (%)", ylabel="%")
        ax.grid(alpha=0.3)
    axes_list = list(getattr(axes, "flat", [axes]))
    axes_list[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(plan: Plan, results: Sequence[dict], pipelines: Sequence[dict] = (),
                  images: Optional[dict] = None) -> Optional[str]:
    if not results:
        return None
    df = results_frame(results)
    df.to_csv(os.path.join(plan.out, "results.csv"), index=False)
    summary = summarise(df)
    summary.to_csv(os.path.join(plan.out, "summary.csv"), index=False)
    text = markdown(summary, plan, pipelines, results, images)
    with open(os.path.join(plan.out, "summary.md"), "w") as f:
        f.write(text)
    plot(summary, os.path.join(plan.out, "results.png"))
    return text


README_START, README_END = "<!-- reproduce-results:start -->", "<!-- reproduce-results:end -->"
PUBLISHED_PLOT = "docs/reproduce-results.png"


def plan_command(plan: Plan) -> str:
    """`make reproduce`, with REPRODUCE_ARGS for every setting that differs from the defaults."""
    flags = {"rates": "--rates", "p_vecap": "--p", "seeds": "--seeds", "n": "--n", "steps": "--steps",
             "batch_size": "--batch-size", "eval_n": "--eval-n"}
    default = Plan(out=plan.out)
    args = []
    for field, flag in flags.items():
        value = getattr(plan, field)
        if value != getattr(default, field):
            args.append(f"{flag} {','.join(f'{v:g}' for v in value) if isinstance(value, tuple) else value}")
    return "make reproduce" + (f' REPRODUCE_ARGS="{" ".join(args)}"' if args else "")


def publish(plan: Plan, text: str, readme: str = os.path.join(REPO, "README.md")) -> None:
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
        pipelines = [prepare_rate(plan, rate, spark) for rate in plan.rates]
        arms = [(r, p, s) for r in plan.rates for p in plan.p_vecap for s in plan.seeds]
        results = []
        for i, (rate, p, seed) in enumerate(arms, 1):
            result = run_arm(plan, rate, p, seed, sets, spark)
            results.append(result)
            m = result["metrics"]
            left = (time.time() - t0) / i * (len(arms) - i)
            say(f"arm {i}/{len(arms)} {result['arm']}: zero-shot {m['zeroshot_top1']:.1f}%, I2T R@1 "
                f"{m[f'{RETRIEVAL}/i2t_r1']:.1f}%, T2I R@1 {m[f'{RETRIEVAL}/t2i_r1']:.1f}% "
                f"(~{left / 60:.0f} min left)")
            write_results(plan, results, pipelines, sets.get("images"))
    finally:
        spark.stop()
    text = write_results(plan, results, pipelines, sets.get("images"))
    if publish_to:
        publish(plan, text, publish_to)
    say(f"done in {(time.time() - t0) / 60:.1f} min: {plan.out}/summary.md, results.csv, results.png\n{text}")
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    def floats(s):
        return tuple(float(x) for x in s.split(",") if x)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.getcwd(), "work", "reproduce"))
    p.add_argument("--quick", action="store_true", help="a few minutes: 2 rates, p 0 and 1, 1 seed, tiny data")
    p.add_argument("--rates", type=floats)
    p.add_argument("--p", type=floats, help="p_vecap values (default 0,0.5,1)")
    p.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",") if x))
    p.add_argument("--n", type=int, help="distinct crawl images per rate")
    p.add_argument("--steps", type=int, help="training steps per arm")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-n", type=int, help="held-out test images per dataset")
    p.add_argument("--publish", nargs="?", const=os.path.join(REPO, "README.md"), metavar="README",
                   help="at the end, write summary.md into the README's results block and results.png to docs/")
    p.add_argument("--captioner", help="demo captioner folder (default: ~/.cache/veclip/models/demo-captioner, shared with make demo)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fields = dict(QUICK) if a.quick else {}
    given = {"rates": a.rates, "p_vecap": a.p, "seeds": a.seeds, "n": a.n, "steps": a.steps,
             "batch_size": a.batch_size, "eval_n": a.eval_n, "captioner_dir": a.captioner}
    fields.update({k: v for k, v in given.items() if v is not None})
    run(Plan(out=os.path.abspath(a.out), **fields), publish_to=a.publish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
