"""Image-text retrieval sets: COCO captions JSON and the Karpathy-split JSON (COCO 5k, Flickr30k 1k).

    data = load_retrieval(spec, max_images=None)   # spec: veclip.config.evaluate.RetrievalSet
    data.images      # image file paths, in file order
    data.captions    # caption strings
    data.text_image  # text_image[t] = index in data.images of caption t's image
    data.counts      # what was read and what was left out, and why

Nothing is dropped silently: captions of images that are not in the file, images without captions,
captions over `captions_per_image` and images outside a `max_images` subset are counted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class RetrievalData:
    name: str
    images: list[str]
    captions: list[str]
    text_image: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def subset(self, keep: np.ndarray) -> "RetrievalData":
        """Only the images at the (sorted) indices `keep`, with their captions re-indexed."""
        keep = np.asarray(keep, dtype=np.int64)
        new_index = np.full(len(self.images), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        mapped = new_index[self.text_image]
        kept = mapped >= 0
        return RetrievalData(self.name, [self.images[i] for i in keep],
                             [c for c, k in zip(self.captions, kept) if k], mapped[kept],
                             dict(self.counts), self.source)


def spread(total: int, limit: Optional[int]) -> np.ndarray:
    """Indices of an evenly spaced, deterministic subset of at most `limit` of `total` items."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, limit).round().astype(np.int64))


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: captions file not found: {path}")
    with open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ValueError(f"{what}: {path} has no `images` list")
    return doc


def _assemble(name: str, images: list[str], per_image: list[list[str]], cap: Optional[int],
              counts: dict[str, int], source: str) -> RetrievalData:
    """Apply the caption cap, drop images without captions (counted), flatten captions."""
    paths, captions, owner = [], [], []
    for path, caps in zip(images, per_image):
        if not caps:
            counts["images_without_captions"] = counts.get("images_without_captions", 0) + 1
            continue
        if cap is not None and len(caps) > cap:
            counts["captions_over_cap"] = counts.get("captions_over_cap", 0) + len(caps) - cap
            caps = caps[:cap]
        captions.extend(caps)
        owner.extend([len(paths)] * len(caps))
        paths.append(path)
    counts["images"] = len(paths)
    counts["captions"] = len(captions)
    return RetrievalData(name, paths, captions, np.asarray(owner, dtype=np.int64), counts, source)


def load_coco(name: str, path: str, images_dir: Optional[str] = None,
              captions_per_image: Optional[int] = 5) -> RetrievalData:
    """COCO captions format: `images[]` (id, file_name) and `annotations[]` (image_id, caption)."""
    doc = _read_json(path, name)
    images_dir = images_dir or os.path.join(os.path.dirname(path), "images")
    anns = doc.get("annotations")
    if not isinstance(anns, list):
        raise ValueError(f"{name}: {path} has no `annotations` list (not a COCO captions file?)")
    index, files = {}, []
    for img in doc["images"]:
        if "id" not in img or "file_name" not in img:
            raise ValueError(f"{name}: an entry of `images` lacks `id` or `file_name`: {str(img)[:200]}")
        index[img["id"]] = len(files)
        files.append(os.path.join(images_dir, img["file_name"]))
    per_image: list[list[str]] = [[] for _ in files]
    counts = {"images_in_file": len(files), "captions_in_file": len(anns), "captions_unknown_image": 0,
              "captions_without_text": 0}
    for ann in anns:
        slot = index.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if slot is None:
            counts["captions_unknown_image"] += 1
        elif not isinstance(ann.get("caption"), str):
            counts["captions_without_text"] += 1
        else:
            per_image[slot].append(ann["caption"].strip())
    if counts["captions_unknown_image"]:
        log.warning("%s: %d captions refer to no image of %s (left out)", name,
                    counts["captions_unknown_image"], path)
    return _assemble(name, files, per_image, captions_per_image, counts, path)


def load_karpathy(name: str, path: str, images_dir: Optional[str] = None, split: str = "test",
                  captions_per_image: Optional[int] = 5) -> RetrievalData:
    """Karpathy-split JSON: `images[]` with filepath, filename, split and `sentences[].raw`."""
    doc = _read_json(path, name)
    images_dir = images_dir or os.path.dirname(path)
    files, per_image = [], []
    splits: dict[str, int] = {}
    sentences = without_text = 0
    for img in doc["images"]:
        splits[img.get("split", "?")] = splits.get(img.get("split", "?"), 0) + 1
        if img.get("split") != split:
            continue
        if "filename" not in img or not isinstance(img.get("sentences"), list):
            raise ValueError(f"{name}: an image of {path} lacks `filename` or `sentences`: {str(img)[:200]}")
        files.append(os.path.join(images_dir, img.get("filepath", ""), img["filename"]))
        raw = [s.get("raw") if isinstance(s, dict) else None for s in img["sentences"]]
        per_image.append([r.strip() for r in raw if isinstance(r, str)])
        sentences += len(raw)
        without_text += len(raw) - len(per_image[-1])
    if not files:
        raise ValueError(f"{name}: no image of {path} is in split '{split}' (splits there: "
                         f"{', '.join(f'{k}={v}' for k, v in sorted(splits.items()))})")
    counts = {"images_in_file": len(doc["images"]), "images_other_splits": len(doc["images"]) - len(files),
              "captions_in_file": sentences, "captions_without_text": without_text}
    return _assemble(name, files, per_image, captions_per_image, counts, path)


def load_retrieval(spec, max_images: Optional[int] = None) -> RetrievalData:
    """A `RetrievalSet` config entry -> RetrievalData, subset to `max_images` evenly spaced images."""
    if spec.format == "coco":
        data = load_coco(spec.name, spec.path, spec.images_dir, spec.captions_per_image)
    elif spec.format == "karpathy":
        data = load_karpathy(spec.name, spec.path, spec.images_dir, spec.split, spec.captions_per_image)
    else:
        raise ValueError(f"{spec.name}: unknown retrieval format '{spec.format}' (coco or karpathy)")
    keep = spread(len(data.images), max_images)
    if len(keep) < len(data.images):
        data.counts["images_not_selected"] = len(data.images) - len(keep)
        data.counts["captions_not_selected"] = len(data.captions)
        data = data.subset(keep)
        data.counts["captions_not_selected"] -= len(data.captions)
        data.counts["images"], data.counts["captions"] = len(data.images), len(data.captions)
    log.info("%s: %d images, %d captions from %s", data.name, len(data.images), len(data.captions), data.source)
    return data
