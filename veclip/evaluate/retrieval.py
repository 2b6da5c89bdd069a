"""Image-text retrieval: Recall@1/5/10 image->text and text->image (the COCO 5k / Flickr30k 1k protocol).

    result = evaluate_retrieval(encoder, load_retrieval(spec), batch_size=64)
    result["metrics"]   # {"i2t_r1": .., "i2t_r5": .., "i2t_r10": .., "t2i_r1": .., ...} in percent

Image->text: a hit at K if any of the image's captions is among the K best-scoring captions.
Text->image: a hit at K if the caption's own image is among the K best-scoring images.
An image that does not decode is left out with its captions (counted, with the reason).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from veclip.evaluate.datasets import RetrievalData
from veclip.evaluate.embed import embed_images, embed_texts
from veclip.evaluate.metrics import recall_at_k, retrieval_ranks, topk

log = logging.getLogger(__name__)

KS = (1, 5, 10)


def _batches(paths: list[str], batch_size: int):
    for a in range(0, len(paths), batch_size):
        yield paths[a:a + batch_size]


def _examples(data: RetrievalData, images: torch.Tensor, texts: torch.Tensor, n: int = 3) -> list[dict]:
    """What the model retrieves for a few images, for a person to look at."""
    if not len(data.images):
        return []
    picks = np.unique(np.linspace(0, len(data.images) - 1, min(n, len(data.images))).round().astype(int))
    scores, idx = topk(images[picks], texts, 5)
    out = []
    for row, i in enumerate(picks):
        out.append({"image": data.images[i],
                    "retrieved": [{"caption": data.captions[j], "score": round(float(s), 4),
                                   "correct": bool(data.text_image[j] == i)}
                                  for s, j in zip(scores[row].tolist(), idx[row].tolist())]})
    return out


def evaluate_retrieval(encoder, data: RetrievalData, batch_size: int, workers: int = 2) -> dict:
    images, ok, failures = embed_images(encoder, _batches(data.images, batch_size), len(data.images),
                                        f"{data.name} images", workers)
    counts, paths = dict(data.counts), data.images
    if failures:
        before = len(data.captions)
        data = data.subset(ok)
        counts["captions_of_unreadable_images"] = before - len(data.captions)
    counts["images_unreadable"] = len(failures)
    counts["images_evaluated"] = len(data.images)
    counts["captions_evaluated"] = len(data.captions)
    if not len(data.images):
        raise ValueError(f"{data.name}: none of the images could be read "
                         f"(first failure: {failures[0][1] if failures else 'no images'})")
    texts = embed_texts(encoder, data.captions, batch_size, f"{data.name} captions")
    i2t, t2i = retrieval_ranks(images, texts, torch.as_tensor(data.text_image))
    metrics = {f"i2t_r{k}": v for k, v in recall_at_k(i2t, KS).items()}
    metrics.update({f"t2i_r{k}": v for k, v in recall_at_k(t2i, KS).items()})
    log.info("%s: I2T R@1 %.2f%%, T2I R@1 %.2f%% over %d images, %d captions", data.name, metrics["i2t_r1"],
             metrics["t2i_r1"], len(data.images), len(data.captions))
    return {"name": data.name, "task": "retrieval", "source": data.source, "counts": counts,
            "metrics": metrics, "examples": _examples(data, images, texts),
            "failures": [{"image": paths[i], "reason": r} for i, r in failures[:100]]}
