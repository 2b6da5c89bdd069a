"""Real labelled images for the offline demo: Fashion-MNIST (Debian package) and CIFAR-10 (../shared/data).

    from veclip.demo.sources import load, available, DATASETS
    split = load("fashion-mnist", "captioner", limit=1000)
    split.images      # uint8 N x H x W x 3 RGB (Fashion-MNIST grey copied to 3 channels)
    split.labels      # int64 N
    split.class_names # human-friendly names, indexed by label
    split.keys        # stable ids: "fmnist-train-000123", "cifar10-test-004711" (index in the official split)

Parts are disjoint: "captioner" = the official train split's even indices (the demo captioner trains on
them), "crawl" = its odd indices (the noisy demo crawl is built from them), "test" = the official test
split (held out: zero-shot evaluation and the captioner's own accuracy). Within a part the images come
in a fixed pseudo-random order (seeded per part; CIFAR-10's parquet is grouped by class), so `limit=N` takes a
class-mixed first N and is the same on every machine.

Fashion-MNIST: `apt-get install dataset-fashion-mnist` (idx files under /usr/share/datasets/fashion-mnist,
override with VECLIP_FASHION_MNIST). CIFAR-10: `../shared/data/cifar10/{train,test}.parquet` relative to
the repository root (override the shared/data folder with VECLIP_SHARED_DATA).
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np

from veclip.files import shared_data_dir

DATASETS = ("fashion-mnist", "cifar10")
PARTS = ("captioner", "crawl", "test")

FASHION_MNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
KEY_PREFIX = {"fashion-mnist": "fmnist", "cifar10": "cifar10"}
ORDER_SEED = 0


@dataclass
class Split:
    """One part of one dataset: images, labels, class names and stable keys, row-aligned."""

    dataset: str
    part: str
    images: np.ndarray        # uint8, N x H x W x 3, RGB
    labels: np.ndarray        # int64, N
    class_names: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def label_names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels]


def class_names(dataset: str) -> list[str]:
    """The human-friendly class names of `dataset`, indexed by label."""
    names = {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
    if dataset not in names:
        raise ValueError(f"unknown demo dataset {dataset!r}; choose one of {DATASETS}")
    return list(names[dataset])


def fashion_mnist_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("VECLIP_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def _files(dataset: str) -> dict[str, pathlib.Path]:
    if dataset == "fashion-mnist":
        d = fashion_mnist_dir()
        return {f"{split}-{kind}": d / f"{prefix}-{kind}-ubyte.gz" for split, prefix in (("train", "train"),
                ("test", "t10k")) for kind in ("images-idx3", "labels-idx1")}
    if dataset == "cifar10":
        d = shared_data_dir() / "cifar10"
        return {split: d / f"{split}.parquet" for split in ("train", "test")}
    raise ValueError(f"unknown demo dataset {dataset!r}; choose one of {DATASETS}")


def available(dataset: str) -> bool:
    """True when every file of `dataset` is present on this machine."""
    return all(p.exists() for p in _files(dataset).values())


def _require(dataset: str) -> None:
    missing = [str(p) for p in _files(dataset).values() if not p.exists()]
    if not missing:
        return
    if dataset == "fashion-mnist":
        fix = "install it with `apt-get install dataset-fashion-mnist` (or set VECLIP_FASHION_MNIST to its folder)"
    else:
        fix = ("CIFAR-10 is read from ../shared/data/cifar10 next to the repository; set VECLIP_SHARED_DATA "
               "to the shared/data folder")
    raise FileNotFoundError(f"demo dataset {dataset}: missing {', '.join(missing)}; {fix}")


def _read_idx(path: pathlib.Path) -> np.ndarray:
    """An idx file (gzip): big-endian header of dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@lru_cache(maxsize=4)
def _fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    files = _files("fashion-mnist")
    return _read_idx(files[f"{split}-images-idx3"]), _read_idx(files[f"{split}-labels-idx1"]).astype(np.int64)


@lru_cache(maxsize=4)
def _cifar_table(split: str):
    import pyarrow.parquet as pq

    return pq.read_table(_files("cifar10")[split], columns=["label", "jpeg"])


def _decode_jpegs(blobs: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def _part_indices(n: int, part: str) -> np.ndarray:
    """Indices into the official split, in the part's fixed pseudo-random order."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")
    base = np.arange(n)
    if part == "captioner":
        base = base[0::2]
    elif part == "crawl":
        base = base[1::2]
    return base[np.random.default_rng([ORDER_SEED, PARTS.index(part)]).permutation(len(base))]


def load(dataset: str, part: str, limit: Optional[int] = None) -> Split:
    """The `part` of `dataset` (see the module docstring), optionally only its first `limit` images."""
    _files(dataset)  # unknown dataset -> ValueError
    _require(dataset)
    split = "test" if part == "test" else "train"
    if dataset == "fashion-mnist":
        images, labels = _fashion_mnist(split)
        idx = _part_indices(len(labels), part)[:limit]
        grey = images[idx]
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        labels = labels[idx]
    else:
        table = _cifar_table(split)
        idx = _part_indices(table.num_rows, part)[:limit]
        sub = table.take(idx)
        rgb = _decode_jpegs(sub.column("jpeg").to_pylist()) if len(idx) else np.zeros((0, 32, 32, 3), np.uint8)
        labels = np.asarray(sub.column("label").to_pylist(), dtype=np.int64)
    keys = [f"{KEY_PREFIX[dataset]}-{split}-{i:06d}" for i in idx]
    return Split(dataset, part, np.ascontiguousarray(rgb, dtype=np.uint8), labels.astype(np.int64),
                 class_names(dataset), keys)
