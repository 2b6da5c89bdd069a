"""Local files: writing one atomically, and the checkout this package runs from.

    with atomic_path("/root/report.json") as tmp:     # write to `tmp`; on success it replaces the target
        write_json_to(tmp)
    write_text_atomic("/root/summary.json", json.dumps(summary))
    REPO_ROOT / "conf" / "local.yaml"                 # the checkout (the folder above the package)

A reader of the target sees the old file or the whole new one, never a partial write: the temporary
file is in the target's folder (same file system, so `os.replace` is atomic on POSIX), hidden and named
by the writing process (`.<name>.tmp-<pid>`), and removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Iterator

# The folder above the `veclip` package: the repository root when running from a checkout.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path:
    """Data shared by the checkouts of one machine: $VECLIP_SHARED_DATA, else `<checkout>/../shared/data`."""
    return pathlib.Path(os.environ.get("VECLIP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to `path` to write to; it replaces `path` when the block succeeds."""
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield str(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    """Write `text` to `path` atomically (see `atomic_path`); returns `path`."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return str(path)
