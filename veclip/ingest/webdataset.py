"""Read img2dataset webdataset shards: `{key}.jpg|png|webp|...`, `{key}.txt`, `{key}.json` per sample.

    for sample in read_webdataset("/crawl/00000.tar", max_bytes=20_000_000): ...

Members of one sample are consecutive (the webdataset convention); a sample is complete when the
next key starts. Damage never raises: a truncated or corrupt shard yields every sample before the
damage, the sample being read when it happened (reason `truncated`), and one row for the rest of
the shard (`truncated_shard` or `corrupt_shard`, source_key `@<byte offset>`). Python's tarfile
stops silently at a garbled header or at a cut between members; checking for the end-of-archive
marker (two zero blocks) after the last member catches both.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import zlib
from typing import Iterator, Optional

from veclip.ingest.images import MISSING_IMAGE, TOO_LARGE, TRUNCATED
from veclip.ingest.records import Sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "avif")
TRUNCATED_SHARD, CORRUPT_SHARD = "truncated_shard", "corrupt_shard"
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def split_member(name: str) -> tuple[str, str]:
    """`dir/000017.jpg` -> (`dir/000017`, `jpg`); the extension is everything after the first dot."""
    head, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _meta(members: dict) -> dict:
    raw = members.get("json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw.decode("utf-8", "replace"))
        return meta if isinstance(meta, dict) else {}
    except ValueError:
        return {}


def _text(members: dict, meta: dict) -> Optional[str]:
    if "txt" in members:
        return members["txt"].decode("utf-8", "replace")
    caption = meta.get("caption")
    return caption if isinstance(caption, str) else None


def make_sample(key: str, members: dict, reason: Optional[str] = None, detail: Optional[str] = None) -> Sample:
    """A Sample from the members read for one key (`members[ext]` = bytes, or an int size if too large)."""
    meta = _meta(members)
    url = meta.get("url") if isinstance(meta.get("url"), str) else None
    sample = Sample(source_key=key, url=url, alt_text_raw=_text(members, meta), reason=reason, detail=detail)
    if reason:
        return sample
    ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
    if ext is None:
        status = meta.get("status"), meta.get("error_message")
        sample.reason, sample.detail = MISSING_IMAGE, f"no image member (members: {sorted(members)}; status {status})"
    elif isinstance(members[ext], int):
        sample.reason, sample.detail = TOO_LARGE, f"{key}.{ext} is {members[ext]:,} bytes > max_bytes"
    else:
        sample.image = members[ext]
    return sample


def _rest(offset: int, reason: str, detail: str) -> Sample:
    return Sample(source_key=f"@{offset}", reason=reason,
                  detail=f"shard damaged at byte {offset:,}: {detail}; samples after this point are lost")


def _end_check(tf: tarfile.TarFile) -> Optional[Sample]:
    """After the last member: the end-of-archive marker must follow, else the shard is cut or garbled."""
    try:
        tf.fileobj.seek(tf.offset)
        tail = tf.fileobj.read(1024)
    except _READ_ERRORS as e:
        return _rest(tf.offset, TRUNCATED_SHARD, f"cannot read the end of the archive: {e}")
    if tail.strip(b"\0"):
        return _rest(tf.offset, CORRUPT_SHARD, "unreadable tar header (garbage where a member should start)")
    if len(tail) < 1024:
        return _rest(tf.offset, TRUNCATED_SHARD, "no end-of-archive marker (file cut between members)")
    return None


def read_webdataset(path: str, max_bytes: int) -> Iterator[Sample]:
    """Samples of one shard, in order; never raises on damaged data (see the module docstring)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        yield _rest(0, CORRUPT_SHARD, f"cannot open: {e}")
        return
    with f:
        try:
            tf = tarfile.open(fileobj=f, mode="r:*")
        except _READ_ERRORS as e:
            yield _rest(0, CORRUPT_SHARD, f"not a readable tar archive: {type(e).__name__}: {e}")
            return
        key, members, at = None, {}, 0
        try:
            while True:
                at = tf.offset                 # where the next header is read: the damage point if it fails
                m = tf.next()
                if m is None:
                    break
                if not m.isfile():
                    continue
                at = m.offset
                k, ext = split_member(m.name)
                if k != key:
                    if key is not None:
                        yield make_sample(key, members)
                    key, members = k, {}
                # An oversized member is not read into memory: only its size is kept.
                members[ext] = m.size if m.size > max_bytes else tf.extractfile(m).read()
        except _READ_ERRORS as e:
            if key is not None:
                yield make_sample(key, members, TRUNCATED, f"shard damaged while reading this sample: {e}")
            yield _rest(at, TRUNCATED_SHARD, f"{type(e).__name__}: {e}")
            return
        if key is not None:
            yield make_sample(key, members)
        damage = _end_check(tf)
        if damage:
            log.warning("%s: %s", path, damage.detail)
            yield damage
