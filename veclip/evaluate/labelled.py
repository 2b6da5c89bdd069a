"""Labelled image sets for zero-shot classification: parquet of (image bytes, label), ImageFolder trees,
ImageNet-style folders; class names from a file, open_clip's ImageNet list, a column or folder names.

    data = load_labelled(spec, max_images=200)    # spec: veclip.config.evaluate.ZeroShotSet
    data.classnames, data.labels                   # labels[i] in 0 .. len(classnames)-1
    for batch in data.image_batches(64): ...       # image sources (bytes or paths), streamed in order

Images are streamed, not held in memory: a parquet is read file by file, batch by batch, keeping
only the selected rows. Subsets (`max_images`) are evenly spaced over the whole set, so a set
sorted by label still gets every class.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

import numpy as np

from veclip.evaluate.datasets import spread

log = logging.getLogger(__name__)

ImageSource = Union[str, bytes]
IMAGE_COLUMNS = ("jpeg", "jpg", "png", "webp", "image", "image_bytes", "bytes")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class LabelledData:
    name: str
    classnames: list[str]
    labels: np.ndarray
    batches: Callable[[int], Iterator[list[ImageSource]]]
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def image_batches(self, batch_size: int) -> Iterator[list[ImageSource]]:
        return self.batches(batch_size)


def read_classnames(value: str) -> list[str]:
    """`imagenet`, a JSON list / {label: name} file, or a text file with one name per line (line i = label i)."""
    if value == "imagenet":
        import open_clip
        return list(open_clip.IMAGENET_CLASSNAMES)
    if not os.path.isfile(value):
        raise FileNotFoundError(f"class names file not found: {value} (or use `imagenet`)")
    with open(value) as f:
        text = f.read()
    if value.endswith(".json"):
        doc = json.loads(text)
        if isinstance(doc, dict):
            doc = [doc[k] for k in sorted(doc, key=int)]
        names = [str(x).strip() for x in doc]
    else:
        names = [line.strip() for line in text.rstrip("\n").split("\n")]
    empty = [i for i, n in enumerate(names) if not n]
    if empty or not names:
        raise ValueError(f"class names file {value}: empty name at line(s) {empty[:5]} (line i names label i)")
    return names


def _parquet_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no parquet file at {path}")
    return files


def _image_column(schema, wanted: Optional[str], path: str) -> str:
    names = schema.names
    if wanted:
        if wanted not in names:
            raise ValueError(f"{path}: no image column '{wanted}' (columns: {', '.join(names)})")
        return wanted
    for name in IMAGE_COLUMNS:
        if name in names:
            return name
    raise ValueError(f"{path}: no image column among {IMAGE_COLUMNS} (columns: {', '.join(names)}); "
                     "set image_column")


def _labels_from_parquet(files: list[str], spec) -> tuple[np.ndarray, dict[int, str]]:
    import pyarrow.parquet as pq

    labels, names = [], {}
    for path in files:
        schema = pq.read_schema(path)
        if spec.label_column not in schema.names:
            raise ValueError(f"{spec.name}: {path} has no label column '{spec.label_column}' "
                             f"(columns: {', '.join(schema.names)})")
        cols = [spec.label_column]
        with_names = spec.label_name_column and spec.label_name_column in schema.names
        cols += [spec.label_name_column] if with_names else []
        table = pq.read_table(path, columns=cols)
        col = table.column(spec.label_column)
        if col.null_count:
            raise ValueError(f"{spec.name}: {col.null_count} rows of {path} have no '{spec.label_column}'")
        values = col.to_numpy()
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{spec.name}: label column '{spec.label_column}' of {path} holds "
                             f"{values.dtype}, not integers")
        labels.append(values.astype(np.int64))
        if with_names:
            for label, name in set(zip(values.tolist(), table.column(spec.label_name_column).to_pylist())):
                if names.setdefault(label, name) != name:
                    raise ValueError(f"{spec.name}: label {label} has two names: '{names[label]}' and '{name}'")
    return np.concatenate(labels) if labels else np.zeros(0, np.int64), names


def _stream_parquet(files: list[str], spec, keep: np.ndarray) -> Callable[[int], Iterator[list[ImageSource]]]:
    def batches(batch_size: int) -> Iterator[list[ImageSource]]:
        import pyarrow.parquet as pq

        wanted, offset, pending = set(keep.tolist()), 0, []
        for path in files:
            pf = pq.ParquetFile(path)
            column = _image_column(pf.schema_arrow, spec.image_column, path)
            for record_batch in pf.iter_batches(batch_size=1024, columns=[column]):
                values = record_batch.column(0).to_pylist()
                for i, value in enumerate(values):
                    if offset + i in wanted:
                        pending.append(value["bytes"] if isinstance(value, dict) else value)
                        if len(pending) == batch_size:
                            yield pending
                            pending = []
                offset += len(values)
        if pending:
            yield pending
    return batches


def load_parquet(spec, max_images: Optional[int] = None) -> LabelledData:
    files = _parquet_files(spec.path)
    labels, column_names = _labels_from_parquet(files, spec)
    if spec.classnames:
        classnames = read_classnames(spec.classnames)
    elif column_names:
        missing = sorted(set(range(max(column_names) + 1)) - set(column_names))
        if missing:
            raise ValueError(f"{spec.name}: no name for labels {missing[:10]} in column '{spec.label_name_column}';"
                             " give a classnames file")
        classnames = [column_names[i] for i in range(len(column_names))]
    else:
        raise ValueError(f"{spec.name}: no class names: set `classnames` (file or `imagenet`) or a "
                         f"label name column (looked for '{spec.label_name_column}')")
    keep = spread(len(labels), max_images)
    counts = {"samples_in_file": int(len(labels)), "samples_not_selected": int(len(labels) - len(keep))}
    return LabelledData(spec.name, classnames, labels[keep], _stream_parquet(files, spec, keep), counts,
                        spec.path)


def _paths_in_slices(paths: list[str]) -> Callable[[int], Iterator[list[ImageSource]]]:
    def batches(batch_size: int) -> Iterator[list[ImageSource]]:
        for a in range(0, len(paths), batch_size):
            yield paths[a:a + batch_size]
    return batches


def load_imagefolder(spec, max_images: Optional[int] = None) -> LabelledData:
    """`root/<class>/<image>`: classes in sorted folder order (the ImageNet synset order for `imagenet`)."""
    if not os.path.isdir(spec.path):
        raise FileNotFoundError(f"{spec.name}: ImageFolder root not found: {spec.path}")
    classes = sorted(d for d in os.listdir(spec.path) if os.path.isdir(os.path.join(spec.path, d)))
    if not classes:
        raise ValueError(f"{spec.name}: {spec.path} has no class sub-folders")
    paths, labels, skipped = [], [], 0
    for label, cls in enumerate(classes):
        for fname in sorted(os.listdir(os.path.join(spec.path, cls))):
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(spec.path, cls, fname))
                labels.append(label)
            else:
                skipped += 1
    names_value = spec.classnames or ("imagenet" if spec.format == "imagenet" else None)
    classnames = read_classnames(names_value) if names_value else [c.replace("_", " ") for c in classes]
    if len(classnames) != len(classes):
        raise ValueError(f"{spec.name}: {len(classes)} class folders in {spec.path} but {len(classnames)} class "
                         f"names in {names_value}")
    keep = spread(len(paths), max_images)
    counts = {"samples_in_file": len(paths), "samples_not_selected": len(paths) - len(keep),
              "files_not_images": skipped}
    return LabelledData(spec.name, classnames, np.asarray(labels, np.int64)[keep],
                        _paths_in_slices([paths[i] for i in keep]), counts, spec.path)


def load_labelled(spec, max_images: Optional[int] = None) -> LabelledData:
    """A `ZeroShotSet` config entry -> LabelledData, with labels checked against the class names."""
    if spec.format == "parquet":
        data = load_parquet(spec, max_images)
    elif spec.format in ("imagefolder", "imagenet"):
        data = load_imagefolder(spec, max_images)
    else:
        raise ValueError(f"{spec.name}: unknown zero-shot format '{spec.format}' (parquet, imagefolder, imagenet)")
    if len(data.labels) and (data.labels.min() < 0 or data.labels.max() >= len(data.classnames)):
        raise ValueError(f"{spec.name}: labels range {data.labels.min()}..{data.labels.max()} but there are "
                         f"{len(data.classnames)} class names")
    log.info("%s: %d images, %d classes from %s", data.name, len(data.labels), len(data.classnames), data.source)
    return data
