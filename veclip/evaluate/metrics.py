"""Retrieval and classification metrics on L2-normalised embeddings: pure, vectorised, chunked.

    i2t, t2i = retrieval_ranks(image_emb, text_emb, text_image)   # text_image[t] = index of t's image
    recall_at_k(i2t, (1, 5, 10))                                    # {1: 41.2, 5: ..., 10: ...} in percent
    ranks = class_ranks(image_emb, class_emb, labels)
    recall_at_k(ranks, (1, 5)), mean_per_class_recall(ranks, labels, n_classes)

Top-K membership is decided by rank counting: the rank of a query's best positive is the number of
*negatives* scoring at least as high as it (ties are broken against the model, so a collapsed model
that scores everything alike gets no credit), and the query is a hit at K when that rank is below K.
That is the standard "any positive in the top K" definition, computed with one comparison per
similarity instead of a sort. Similarities are computed in chunks of queries whose size keeps each
block near `chunk_elements` floats, so a 5k x 25k evaluation needs ~64 MB, not 500 MB.
"""

from __future__ import annotations

from typing import Iterable

import torch

CHUNK_ELEMENTS = 16 * 1024 * 1024


def _chunk_rows(n_candidates: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, n_candidates))


def _count_ge(sims: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, how many entries are >= the row's threshold (an int32 sum is ~2x faster than the default)."""
    return torch.sum(sims >= threshold, dim=1, dtype=torch.int32).long()


def check_embeddings(name: str, emb: torch.Tensor) -> None:
    """A 2-D float tensor of finite values (NaN would compare false everywhere and look perfect)."""
    if emb.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D embedding matrix, got shape {tuple(emb.shape)}")
    bad = int((~torch.isfinite(emb)).any(dim=1).sum())
    if bad:
        raise ValueError(f"{name}: {bad} of {emb.shape[0]} embeddings contain NaN or infinity")


def retrieval_ranks(images: torch.Tensor, texts: torch.Tensor, text_image: torch.Tensor,
                    chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(i2t ranks per image, t2i ranks per text); rank 0 = a positive is first.

    Image -> text: the rank of the image's best-scoring caption among the other images' captions.
    Text -> image: the rank of the caption's own image among all other images.
    """
    check_embeddings("images", images)
    check_embeddings("texts", texts)
    text_image = torch.as_tensor(text_image, dtype=torch.long)
    n, m = images.shape[0], texts.shape[0]
    if text_image.shape != (m,):
        raise ValueError(f"text_image has shape {tuple(text_image.shape)}, expected ({m},) (one image per text)")
    if m and (int(text_image.min()) < 0 or int(text_image.max()) >= n):
        raise ValueError(f"text_image refers to images outside 0..{n - 1}")
    captioned = torch.bincount(text_image, minlength=n)
    if n and int((captioned == 0).sum()):
        raise ValueError(f"{int((captioned == 0).sum())} of {n} images have no caption: image->text recall "
                         "is undefined for them (drop them first)")
    return _i2t_ranks(images, texts, text_image, chunk_elements), _t2i_ranks(images, texts, text_image,
                                                                           chunk_elements)


def _positions(text_image: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, P) indices of each image's captions, padded with 0, and the (n, P) mask of real entries."""
    order = torch.argsort(text_image, stable=True)
    per_image = torch.bincount(text_image, minlength=n)
    starts = torch.cumsum(per_image, 0) - per_image
    slot = torch.arange(len(text_image)) - starts[text_image[order]]
    index = torch.zeros(n, int(per_image.max()) if n else 0, dtype=torch.long)
    index[text_image[order], slot] = order
    valid = torch.arange(index.shape[1])[None, :] < per_image[:, None]
    return index, valid


def _i2t_ranks(images, texts, text_image, chunk_elements) -> torch.Tensor:
    n, m = images.shape[0], texts.shape[0]
    index, valid = _positions(text_image, n)
    step = _chunk_rows(m, chunk_elements)
    out = torch.empty(n, dtype=torch.long)
    for a in range(0, n, step):
        b = min(n, a + step)
        sims = images[a:b] @ texts.T                                        # (c, m)
        pos = sims.gather(1, index[a:b]).masked_fill(~valid[a:b], float("-inf"))
        best = pos.amax(dim=1, keepdim=True)                                # the best caption of each image
        # Everything scoring >= the best caption, minus the image's own captions among them.
        out[a:b] = _count_ge(sims, best) - ((pos >= best) & valid[a:b]).sum(dim=1)
    return out


def _t2i_ranks(images, texts, text_image, chunk_elements) -> torch.Tensor:
    n, m = images.shape[0], texts.shape[0]
    step = _chunk_rows(n, chunk_elements)
    out = torch.empty(m, dtype=torch.long)
    for a in range(0, m, step):
        b = min(m, a + step)
        sims = texts[a:b] @ images.T                                        # (c, n)
        own = sims.gather(1, text_image[a:b, None])
        # The own image scores >= itself exactly (same matrix element), hence the -1.
        out[a:b] = _count_ge(sims, own) - 1
    return out


def class_ranks(images: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor,
                chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Rank of each image's true class among the other classes (0 = top-1 correct)."""
    check_embeddings("images", images)
    check_embeddings("classes", classes)
    labels = torch.as_tensor(labels, dtype=torch.long)
    n, c = images.shape[0], classes.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected ({n},)")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels outside 0..{c - 1} (min {int(labels.min())}, max {int(labels.max())})")
    out = torch.empty(n, dtype=torch.long)
    step = _chunk_rows(c, chunk_elements)
    for a in range(0, n, step):
        b = min(n, a + step)
        logits = images[a:b] @ classes.T
        true = logits.gather(1, labels[a:b, None])
        out[a:b] = _count_ge(logits, true) - 1
    return out


def recall_at_k(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """Percent of queries whose rank is below K, for each K."""
    if ranks.numel() == 0:
        raise ValueError("no queries to score")
    return {k: 100.0 * float((ranks < k).double().mean()) for k in ks}


def mean_per_class_recall(ranks: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int = 1) -> float:
    """Mean over the classes present of the fraction of their images ranked below K (percent)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    hits = torch.zeros(n_classes, dtype=torch.double).index_add_(0, labels, (ranks < k).double())
    totals = torch.bincount(labels, minlength=n_classes).double()
    present = totals > 0
    if not bool(present.any()):
        raise ValueError("no labelled images to score")
    return 100.0 * float((hits[present] / totals[present]).mean())


def topk(queries: torch.Tensor, candidates: torch.Tensor, k: int,
         chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) of the K best candidates per query, ties in candidate order; chunked."""
    k = min(k, candidates.shape[0])
    step = _chunk_rows(candidates.shape[0], chunk_elements)
    scores, indices = [], []
    for a in range(0, queries.shape[0], step):
        sims = queries[a:a + step] @ candidates.T
        s, i = torch.sort(sims, dim=1, descending=True, stable=True)
        scores.append(s[:, :k])
        indices.append(i[:, :k])
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def normalize(emb: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows in float32."""
    return torch.nn.functional.normalize(emb.float(), dim=-1)
