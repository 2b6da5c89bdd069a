"""Embeddings in batches under torch.inference_mode, with images decoded by a thread pool.

    emb, ok, failures = embed_images(encoder, data.image_batches(64), total=n, label="coco images")
    # emb: (len(ok), d); ok: indices (into the input order) of the images that decoded;
    # failures: [(index, "UnidentifiedImageError: ...")] for those that did not
    texts = embed_texts(encoder, captions, batch_size=64, label="coco captions")

An image that does not decode is reported with its reason and left out by the caller (counted),
never allowed to stop the evaluation. The next batch is decoded while the model runs this one.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch
from PIL import Image

from veclip.progress import Progress

log = logging.getLogger(__name__)

Source = Union[str, bytes, None]


def open_image(source: Source) -> Image.Image:
    """Decode encoded bytes or a file path into an RGB image."""
    if source is None:
        raise ValueError("no image (null)")
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
        im.load()
        return im.convert("RGB")


def _prepare(encoder, source: Source) -> Union[torch.Tensor, str]:
    try:
        return encoder.prepare_image(open_image(source))
    except Exception as e:  # noqa: BLE001 - a bad image is a row-level failure, reported by the caller
        return f"{type(e).__name__}: {e}"[:300]


def embed_images(encoder, batches: Iterable[list[Source]], total: Optional[int], label: str,
                 workers: int = 2) -> tuple[torch.Tensor, np.ndarray, list[tuple[int, str]]]:
    """Embed every image the batches yield; (embeddings, indices that decoded, failures)."""
    progress = Progress(total, label, unit="images")
    chunks, ok, failures = [], [], []
    offset = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for prepared in _prefetch(pool, encoder, iter(batches)):
            good = []
            for i, item in enumerate(prepared):
                if isinstance(item, str):
                    failures.append((offset + i, item))
                else:
                    good.append(item)
                    ok.append(offset + i)
            if good:
                chunks.append(encoder.encode_pixels(torch.stack(good)))
            offset += len(prepared)
            progress.update(len(prepared))
    for index, reason in failures[:5]:
        log.warning("%s: image %d left out: %s", label, index, reason)
    if len(failures) > 5:
        log.warning("%s: %d more images left out", label, len(failures) - 5)
    emb = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return emb, np.asarray(ok, dtype=np.int64), failures


def _prefetch(pool: ThreadPoolExecutor, encoder, batches: Iterator[list[Source]]) -> Iterator[list]:
    """Decode batch k+1 in the pool while the caller encodes batch k."""
    def submit(batch: list[Source]) -> list[Future]:
        return [pool.submit(_prepare, encoder, s) for s in batch]

    pending = next(batches, None)
    futures = submit(pending) if pending is not None else None
    while futures is not None:
        nxt = next(batches, None)
        next_futures = submit(nxt) if nxt is not None else None
        yield [f.result() for f in futures]
        futures = next_futures


def embed_texts(encoder, texts: list[str], batch_size: int, label: str) -> torch.Tensor:
    """Embed texts in batches of `batch_size`; (len(texts), d)."""
    progress = Progress(len(texts), label, unit="texts")
    chunks = []
    for a in range(0, len(texts), batch_size):
        chunks.append(encoder.encode_texts(texts[a:a + batch_size]))
        progress.update(len(chunks[-1]))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)
