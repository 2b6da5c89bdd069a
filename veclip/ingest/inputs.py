"""Driver side: expand `ingest.inputs` (paths, globs, folders) into files and decide each file's format.

    files = expand_inputs(["/crawl/*.tar", "/crawl/urls.csv"])   # [InputFile(path, format, size, mtime)]

Only names, sizes and parquet footers are read here; the contents are read by Spark tasks.
Formats: `.tar`/`.tar.gz`/`.tgz` webdataset; `.parquet` with an image-bytes column img2dataset
parquet (`parquet`), without one a URL table; `.csv`/`.tsv`/`.jsonl`/`.ndjson` URL tables;
`.json` VeCap release files. A folder stands for the files in it (recursively); when it holds
webdataset shards only those are taken, since img2dataset writes a metadata parquet and a
`_stats.json` beside each shard. `dbfs:/x` is read through its `/dbfs/x` mount.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from veclip.ingest.readers import IMAGE_FALLBACKS, find_column
from veclip.ingest.text import repair_text

log = logging.getLogger(__name__)

FORMATS = ("webdataset", "parquet", "url_table", "vecap_json")
_BY_EXTENSION = {".tar": "webdataset", ".tar.gz": "webdataset", ".tgz": "webdataset",
                 ".csv": "url_table", ".tsv": "url_table", ".jsonl": "url_table", ".ndjson": "url_table",
                 ".json": "vecap_json", ".parquet": "parquet?"}
_SKIP_SUFFIXES = ("_stats.json", ".crc", "_SUCCESS")


@dataclass(frozen=True)
class InputFile:
    path: str        # as the file system gives it (opened with this)
    format: str
    size: int
    mtime: float

    @property
    def source(self) -> str:
        """The path as text for tables (`source` column, ledger, keys): a file name that is not valid
        UTF-8 (os.listdir gives its bytes as lone surrogates) is repaired, not an error."""
        return repair_text(self.path)


def _extension(path: str) -> str:
    lower = path.lower()
    for ext in sorted(_BY_EXTENSION, key=len, reverse=True):
        if lower.endswith(ext):
            return ext
    return ""


def _local(path: str) -> str:
    if path.startswith("dbfs:/"):
        return "/dbfs/" + path[len("dbfs:/"):].lstrip("/")
    if path.startswith("file://"):
        return path[len("file://"):]
    return path


def _parquet_kind(path: str, image_column: str) -> str:
    try:
        schema = pq.read_schema(path)
    except Exception as e:  # noqa: BLE001 - the task reading it will quarantine the file with the reason
        log.warning("cannot read the parquet footer of %s (%s): the ingest task will report it", path, e)
        return "url_table"
    col = find_column(schema.names, image_column, IMAGE_FALLBACKS)
    is_bytes = col is not None and (pa.types.is_binary(schema.field(col).type)
                                   or pa.types.is_large_binary(schema.field(col).type))
    return "parquet" if is_bytes else "url_table"


def detect_format(path: str, fmt: str = "auto", image_column: str = "jpg") -> str:
    """The format of one file; raises ValueError for a file no reader understands."""
    if fmt != "auto":
        return fmt
    kind = _BY_EXTENSION.get(_extension(path))
    if kind is None:
        raise ValueError(f"ingest: cannot tell the format of {path} from its extension "
                         f"(known: {sorted(_BY_EXTENSION)}); set ingest.format")
    return _parquet_kind(path, image_column) if kind == "parquet?" else kind


def _folder(path: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith(".") and not n.endswith(_SKIP_SUFFIXES) and _extension(n)]
    shards = [p for p in found if _BY_EXTENSION[_extension(p)] == "webdataset"]
    return shards or found


def _expand_one(pattern: str) -> list[str]:
    local = os.path.abspath(os.path.expanduser(_local(pattern)))
    if os.path.isdir(local):
        files = _folder(local)
        if not files:
            raise ValueError(f"ingest.inputs: folder {pattern} holds no input files")
        return files
    files = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
    if not files:
        raise ValueError(f"ingest.inputs: {pattern!r} matches no files")
    return files


def expand_inputs(patterns: Iterable[str], fmt: str = "auto", image_column: str = "jpg") -> list[InputFile]:
    """Every input file once, in a stable order, with its format, size and modification time."""
    patterns = list(patterns)
    if not patterns:
        raise ValueError("ingest.inputs is empty: pass --set ingest.inputs=PATH (a shard, glob or folder)")
    out: dict[str, InputFile] = {}
    for pattern in patterns:
        for path in _expand_one(pattern):
            if path not in out:
                st = os.stat(path)
                out[path] = InputFile(path, detect_format(path, fmt, image_column), st.st_size, st.st_mtime)
    return list(out.values())
