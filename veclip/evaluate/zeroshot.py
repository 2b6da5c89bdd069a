"""Zero-shot classification: class names x prompt templates -> one text embedding per class.

    classifier = class_embeddings(encoder, ["cat", "dog"], load_templates("openai"), batch_size=256)
    result = evaluate_zeroshot(encoder, load_labelled(spec), batch_size=64)
    result["metrics"]   # {"top1": .., "top5": .., "mean_per_class_recall": ..} in percent

Each class embedding is the mean of its L2-normalised prompt embeddings, normalised again (the
CLIP paper's prompt ensembling). Images that do not decode are left out and counted.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from veclip.evaluate.embed import embed_images, embed_texts
from veclip.evaluate.labelled import LabelledData
from veclip.evaluate.metrics import class_ranks, mean_per_class_recall, normalize, recall_at_k

log = logging.getLogger(__name__)

Template = Callable[[str], str]


def _from_text(template: str) -> Template:
    pattern = template.replace("{c}", "{}")
    return lambda c: pattern.replace("{}", c)


def load_templates(value: str) -> list[Template]:
    """`openai` (open_clip's 80), `simple` (its 7) or a file with one template per line holding `{}` or `{c}`."""
    import open_clip

    if value == "openai":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    if value == "simple":
        return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    if not os.path.isfile(value):
        raise FileNotFoundError(f"templates: not `openai`, `simple` or an existing file: {value}")
    with open(value) as f:
        lines = [line.strip() for line in f if line.strip()]
    bad = [line for line in lines if "{}" not in line and "{c}" not in line]
    if bad or not lines:
        raise ValueError(f"templates file {value}: every line needs a `{{}}` or `{{c}}` placeholder "
                         f"(not: {bad[:3]})" if bad else f"templates file {value} is empty")
    return [_from_text(line) for line in lines]


def class_embeddings(encoder, classnames: list[str], templates: list[Template], batch_size: int,
                     label: str = "prompts") -> torch.Tensor:
    """(classes, d): per class, the normalised mean of its normalised prompt embeddings."""
    prompts = [t(c) for c in classnames for t in templates]
    emb = embed_texts(encoder, prompts, batch_size, label)
    per_class = normalize(emb).reshape(len(classnames), len(templates), -1).mean(dim=1)
    return normalize(per_class)


def evaluate_zeroshot(encoder, data: LabelledData, templates: list[Template], batch_size: int,
                      workers: int = 2) -> dict:
    """Top-1, top-5 (percent of images) and mean per-class recall (top-1, averaged over classes)."""
    classifier = class_embeddings(encoder, data.classnames, templates, max(batch_size, 256),
                                  f"{data.name} prompts")
    images, ok, failures = embed_images(encoder, data.image_batches(batch_size), len(data.labels),
                                        f"{data.name} images", workers)
    counts = dict(data.counts, samples_unreadable=len(failures), samples_evaluated=len(ok))
    if not len(ok):
        raise ValueError(f"{data.name}: none of the {len(data.labels)} images could be read "
                         f"(first failure: {failures[0][1] if failures else 'no images'})")
    labels = torch.as_tensor(data.labels[ok])
    ranks = class_ranks(images, classifier, labels)
    n_classes = len(data.classnames)
    recalls = recall_at_k(ranks, (1, 5))
    metrics = {"top1": recalls[1], "top5": recalls[5],
               "mean_per_class_recall": mean_per_class_recall(ranks, labels, n_classes)}
    log.info("%s: top-1 %.2f%%, top-5 %.2f%% over %d images, %d classes", data.name, metrics["top1"],
             metrics["top5"], len(ok), n_classes)
    return {"name": data.name, "task": "zeroshot", "source": data.source, "classes": n_classes,
            "templates": len(templates), "counts": counts, "metrics": metrics,
            "failures": [{"index": i, "reason": r} for i, r in failures[:100]]}
