"""What the reader's workers do to each gold row: decode the JPEG, crop, choose the text, tokenise.

    tf = SampleTransform(SampleSettings.from_config(cfg.train, image_size=64), start_epoch=0, chunks_per_epoch=4)
    out = tf(gold_rows_pdf)       # columns key, image (uint8 3xSxS), tokens (int32 L), source, ok

It runs inside petastorm's worker (a `TransformSpec`), so the training process only stacks arrays.
Everything random is a function of (seed, epoch, key): the crop of a sample and its text are the same
in a resumed run as in the run it continues. A row whose image does not decode, or that has no text,
is kept with `ok = False` (never dropped here), so the reader can check the row count of every row
group against the table and the trainer can count what it skipped.

The worker reads whole row groups in a fixed order, one reader per worker, so the n-th call of a
transform is the n-th row group of its files: the epoch is `start_epoch + calls // chunks_per_epoch`.
"""

from __future__ import annotations

import io
import logging
import math
import random
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image

from veclip.config.train import TrainConfig
from veclip.train import mixing

log = logging.getLogger(__name__)

SOURCES = {mixing.NONE: 0, mixing.ALT_TEXT: 1, mixing.VECAP: 2}
COLUMNS_IN = ["key", "image", "alt_text", "vecap"]


@dataclass(frozen=True)
class SampleSettings:
    """What a reader's worker needs of the `train` section, with the model's resolved image size."""

    model: str
    image_size: int
    p_vecap: float
    seed: int
    crop_scale_min: float

    @classmethod
    def from_config(cls, t: TrainConfig, image_size: int) -> "SampleSettings":
        """`image_size`: the training side in pixels (train.image_size, or the model's when that is null)."""
        return cls(model=t.model, image_size=image_size, p_vecap=t.p_vecap, seed=t.seed,
                   crop_scale_min=t.crop_scale_min)


def crop_box(width: int, height: int, rng: random.Random, scale_min: float) -> tuple[int, int, int, int]:
    """A random crop (left, top, right, bottom) of area fraction in [scale_min, 1] and aspect ratio in
    [3/4, 4/3] (log-uniform), like torchvision's RandomResizedCrop, but drawn from `rng`."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(scale_min, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, left + w, top + h
    # Fallback (e.g. a panorama, where no large crop has an allowed ratio): the central crop with the
    # image's aspect ratio clamped into [3/4, 4/3].
    w, h = width, height
    if width / height > 4 / 3:
        w = round(height * 4 / 3)
    elif width / height < 3 / 4:
        h = round(width * 4 / 3)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def decode_crop(data: bytes, size: int, rng: random.Random, scale_min: float) -> np.ndarray:
    """JPEG (or any PIL format) bytes -> uint8 array (3, size, size) of a random crop, resized bicubic."""
    with Image.open(io.BytesIO(data)) as img:
        # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves >= 2x the target size.
        img.draft("RGB", (2 * size, 2 * size))
        rgb = img.convert("RGB")
    box = crop_box(rgb.width, rgb.height, rng, scale_min) if scale_min < 1 else (0, 0, rgb.width, rgb.height)
    out = rgb.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


class SampleTransform:
    """The petastorm TransformSpec function: a pandas frame of gold rows -> a frame of training arrays."""

    def __init__(self, settings: SampleSettings, start_epoch: int, chunks_per_epoch: int):
        if chunks_per_epoch < 1:
            raise ValueError("a reader needs at least one row group per epoch")
        self.settings = settings
        self.start_epoch = start_epoch
        self.chunks_per_epoch = chunks_per_epoch
        self.calls = 0
        self._tokenizer = None

    def __getstate__(self):  # the tokenizer is rebuilt in the worker process, not pickled
        return {**self.__dict__, "_tokenizer": None}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from veclip.clip import register_configs
            import open_clip

            register_configs()
            self._tokenizer = open_clip.get_tokenizer(self.settings.model)
        return self._tokenizer

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        if self.calls == 0:  # first call in this (worker) process
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
        epoch = self.start_epoch + self.calls // self.chunks_per_epoch
        self.calls += 1
        s = self.settings
        keys = rows["key"].astype(str).tolist()
        images, sources, texts, ok = [], [], [], []
        for key, data, alt, vecap in zip(keys, rows["image"], rows["alt_text"], rows["vecap"]):
            text, source = mixing.choose_text(alt, vecap, s.p_vecap, s.seed, epoch, key)
            image = self._image(key, data, epoch)
            ok.append(image is not None and source != mixing.NONE)
            images.append(image if image is not None else np.zeros((3, s.image_size, s.image_size), np.uint8))
            sources.append(SOURCES[source])
            texts.append(text)
        tokens = self.tokenizer(texts).numpy().astype(np.int32) if texts else np.zeros((0, 1), np.int32)
        return pd.DataFrame({
            "key": keys,
            "image": images,
            "tokens": [np.ascontiguousarray(t) for t in tokens],
            "source": np.asarray(sources, dtype=np.int8),
            "ok": np.asarray(ok, dtype=np.bool_),
        })

    def _image(self, key: str, data: Optional[bytes], epoch: int) -> Optional[np.ndarray]:
        s = self.settings
        if data is None or len(data) == 0:
            log.warning("gold row %s: empty image", key)
            return None
        rng = random.Random(mixing.seed_of("crop", s.seed, epoch, key))
        try:
            return decode_crop(bytes(data), s.image_size, rng, s.crop_scale_min)
        except Exception as e:  # a broken image is counted and skipped by the trainer, never fatal
            log.warning("gold row %s: image does not decode: %s", key, e)
            return None


def transform_spec(settings: SampleSettings, context_length: int, start_epoch: int, chunks_per_epoch: int):
    """The petastorm TransformSpec: gold columns in, training arrays out (text columns removed)."""
    from petastorm.transform import TransformSpec

    size = settings.image_size
    return TransformSpec(
        SampleTransform(settings, start_epoch, chunks_per_epoch),
        edit_fields=[("image", np.uint8, (3, size, size), False),
                     ("tokens", np.int32, (context_length,), False),
                     ("source", np.int8, (), False),
                     ("ok", np.bool_, (), False)],
        selected_fields=["key", "image", "tokens", "source", "ok"])
