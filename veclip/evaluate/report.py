"""Evaluation results as a printed table, flat metric keys and a JSON file.

    print(format_tables(model_label, results))
    flat_metrics(results)      # {"coco-mini/i2t_r1": 1.26, "cifar10/top1": 10.5, ...}
    write_json(doc, path)
"""

from __future__ import annotations

import json
from typing import Iterable

from veclip.files import write_text_atomic

RETRIEVAL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
ZEROSHOT_KEYS = ("top1", "top5", "mean_per_class_recall")


def metric_keys(retrieval_names: Iterable[str], zeroshot_names: Iterable[str]) -> list[str]:
    """Every metric key an evaluation of these datasets produces (to check `promote_metric` up front)."""
    return ([f"{n}/{k}" for n in retrieval_names for k in RETRIEVAL_KEYS]
            + [f"{n}/{k}" for n in zeroshot_names for k in ZEROSHOT_KEYS])


def flat_metrics(results: list[dict]) -> dict[str, float]:
    return {f"{r['name']}/{k}": round(float(v), 4) for r in results for k, v in r["metrics"].items()}


def _left_out(counts: dict) -> str:
    parts = [f"{k}={v}" for k, v in counts.items()
             if v and k not in ("images", "captions", "images_in_file", "captions_in_file", "samples_in_file",
                                "images_evaluated", "captions_evaluated", "samples_evaluated")]
    return ", ".join(parts)


def format_tables(model_label: str, results: list[dict]) -> str:
    lines = [f"Evaluation of {model_label}"]
    retrieval = [r for r in results if r["task"] == "retrieval"]
    zeroshot = [r for r in results if r["task"] == "zeroshot"]
    if retrieval:
        lines += ["", "Retrieval, Recall@K (%)            image -> text            text -> image",
                  f"{'dataset':<16}{'images':>7}{'captions':>9}" + "".join(f"{h:>8}" for h in
                                                                     ("R@1", "R@5", "R@10") * 2)]
        for r in retrieval:
            c = r["counts"]
            lines.append(f"{r['name']:<16}{c['images_evaluated']:>7}{c['captions_evaluated']:>9}"
                         + "".join(f"{r['metrics'][k]:>8.2f}" for k in RETRIEVAL_KEYS))
    if zeroshot:
        lines += ["", "Zero-shot classification (%)",
                  f"{'dataset':<16}{'images':>7}{'classes':>8}{'prompts':>8}{'top-1':>8}{'top-5':>8}"
                  f"{'mean per-class recall':>23}"]
        for r in zeroshot:
            m = r["metrics"]
            lines.append(f"{r['name']:<16}{r['counts']['samples_evaluated']:>7}{r['classes']:>8}"
                         f"{r['templates']:>8}{m['top1']:>8.2f}{m['top5']:>8.2f}{m['mean_per_class_recall']:>23.2f}")
    notes = [(r["name"], _left_out(r["counts"])) for r in results]
    notes = [(n, t) for n, t in notes if t]
    if notes:
        lines += ["", "Left out (counted): " + "; ".join(f"{n}: {t}" for n, t in notes)]
    return "\n".join(lines)


def write_json(doc: dict, path: str) -> str:
    return write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=False, default=str))
