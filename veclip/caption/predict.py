"""What runs on a Spark worker: decode a batch of image bytes, caption it, clean the output.

    load = CaptionLoader(spec, prompt_text, max_chars=cfg.caption.max_chars)   # picklable, shipped to workers
    predict = load("cuda:0")                                  # loads the model (once per worker)
    predict(batch_df)  # -> one caption str, or an Exception for a row that failed on its own

`spec.engine` picks the model runner: `hf` (Captioner, transformers generate on `batch_size` rows)
or `vllm` (VllmCaptioner: the predict carries `whole_partition = True` and `max_rows_per_call`, so
map_batches hands it the partition in calls of up to VLLM_IMAGES_PER_CALL rows, a call's images decoded
at once, and vLLM batches each call continuously).

A row whose bytes do not decode (or announce more than `max_pixels` pixels), or whose cleaned caption
is empty, gets its own exception; the rest of the batch is captioned. Images are decoded by
veclip.imaging.load_rgb, shared with gold: bounded memory, 16-bit grey scaled, alpha on white.
An exception raised by generation itself (CUDA out-of-memory, ...) fails the batch, which
veclip.inference.map_batches splits and retries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Optional, Sequence, Union

import pandas as pd

from veclip.caption.clean import clean_caption
from veclip.caption.models import Captioner, CaptionerSpec
from veclip.config.caption import CaptionConfig
from veclip.imaging import DEFAULT_MAX_PIXELS, UndecodableImage, load_rgb, set_pixel_limit

if TYPE_CHECKING:
    from veclip.caption.vllm_captioner import VllmCaptioner

__all__ = ["CaptionLoader", "EmptyCaption", "UndecodableImage", "caption_batch", "caption_images", "decode_image"]

# Large JPEGs are decoded at a reduced scale (DCT scaling) no smaller than this: every processor
# resizes far below it, and full-size decoding of 4000 px photos would dominate a CPU worker.
DECODE_MAX_SIDE = 1024
# Most images one vLLM engine call receives: all of them are decoded before the engine starts (up to
# ~3 MB each at DECODE_MAX_SIDE), and continuous batching gains nothing past max_num_seqs.
VLLM_IMAGES_PER_CALL = 256


class EmptyCaption(ValueError):
    """Nothing was left of a generated caption after cleaning."""


def decode_image(data: Optional[bytes], max_side: int = DECODE_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Bytes -> upright RGB PIL image, bounded in memory (veclip.imaging.load_rgb); UndecodableImage if broken."""
    return load_rgb(data, max_side, max_pixels)


def caption_batch(captioner: "Captioner | VllmCaptioner", max_chars: int, column: str, batch: pd.DataFrame,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Union[str, Exception]]:
    """One output per row: the cleaned caption, or the row's own exception."""
    out: list[Union[str, Exception, None]] = [None] * len(batch)
    images, where = [], []
    for i, data in enumerate(batch[column]):
        try:
            images.append(decode_image(data, max_pixels=max_pixels))
            where.append(i)
        except UndecodableImage as err:
            out[i] = err
    for i, raw in zip(where, captioner.caption(images)):
        text = clean_caption(raw, max_chars)
        out[i] = text if text else EmptyCaption(f"empty caption after cleaning (raw output {raw[:80]!r})")
    return out


@dataclass(frozen=True)
class CaptionLoader:
    """`load(device) -> predict` for veclip.inference.map_batches."""

    spec: CaptionerSpec
    prompt_text: Optional[str]
    max_chars: int = CaptionConfig.model_fields["max_chars"].default   # caption.max_chars
    column: str = "image"
    max_pixels: int = DEFAULT_MAX_PIXELS   # ingest.max_pixels: refused above, and Pillow's own limit

    @property
    def cache_key(self) -> str:
        """Workers reuse a loaded model only for the very same spec (engine and vLLM options included),
        prompt and pixel limit."""
        digest = hashlib.sha256(repr((self.spec, self.prompt_text, self.max_pixels)).encode()).hexdigest()[:12]
        return f"caption:{self.spec.engine}:{self.spec.model}:{digest}"

    def __call__(self, device: str):
        set_pixel_limit(self.max_pixels)  # runs in the worker process that decodes
        if self.spec.engine == "vllm":
            from veclip.caption.vllm_captioner import VllmCaptioner  # heavy: only when asked for

            captioner = VllmCaptioner(self.spec, device, self.prompt_text)
        else:
            captioner = Captioner(self.spec, device, self.prompt_text)
        predict = partial(caption_batch, captioner, self.max_chars, self.column, max_pixels=self.max_pixels)
        # vLLM batches continuously: hand it the whole partition at once (veclip.inference.run_batches).
        predict.whole_partition = self.spec.engine == "vllm"
        predict.max_rows_per_call = VLLM_IMAGES_PER_CALL
        return predict


def caption_images(loader: CaptionLoader, images: Sequence[bytes], device: str = "cpu") -> list:
    """Caption image bytes without Spark (notebooks, the benchmark's standalone path)."""
    predict = loader(device)
    return list(predict(pd.DataFrame({loader.column: list(images)})))
