"""Training data: a pinned version of the gold table, streamed by petastorm from its own Parquet files.

    plan = plan_gold(Tables(cfg, spark), version=None)     # driver: version, files, row counts (checked)
    shards = shard_files(plan.files, world_size)            # every rank computes the same assignment
    stream = RankStream(shards[rank], settings, ...)        # petastorm readers, started once per run
    epoch = stream.epoch(e)
    while (batch := epoch.next_batch()) is not None: ...
    counts = epoch.finish()       # reads the rest of the epoch; raises if a row is missing

No second copy of the data: the readers open exactly the Parquet files of the pinned Delta version
(`Tables.files`), which is why gold must be plain Parquet (no deletion vectors; `plan_gold` checks
the files hold exactly the version's rows). Each rank reads whole files (balanced by row count); each
of its `reader_workers` petastorm readers reads a fixed subset of them, row group by row group, and
the rank interleaves the readers in a fixed order, so the data order is the same in every run (a
resumed run replays its epoch up to where it stopped). Rows then pass through a shuffle buffer seeded
by (seed, epoch, rank). Decoding, cropping and tokenising happen in the readers' workers
(veclip.train.samples). petastorm's thread pool is not offered: it was seen to return no rows for a
whole epoch without an error. Every row group is counted against the table; a shortfall is an error.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch

from veclip.config.train import TrainConfig
from veclip.train import mixing
from veclip.train.samples import COLUMNS_IN, SOURCES, SampleSettings, transform_spec

log = logging.getLogger(__name__)

POOLS = ("process", "dummy")
# petastorm waits 20 s for a worker process to start; on a busy machine importing pyarrow and petastorm
# in the new process alone takes longer, and the reader then fails at start.
WORKER_START_TIMEOUT_S = 300


class GoldDataError(RuntimeError):
    """The gold table cannot be streamed as asked, or the reader lost rows."""


@dataclass(frozen=True)
class GoldFile:
    url: str                       # what petastorm opens (file:///..., s3://...)
    row_groups: tuple[int, ...]    # rows of each row group, in file order

    @property
    def rows(self) -> int:
        return sum(self.row_groups)


@dataclass(frozen=True)
class GoldPlan:
    table: str                     # location of the gold table (directory or metastore name)
    version: int
    files: tuple[GoldFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def reader_url(path: str) -> str:
    """A file URI from Spark's inputFiles() as petastorm opens it (Databricks dbfs:/ goes through /dbfs)."""
    if path.startswith("dbfs:/"):
        return "file:///dbfs/" + path[len("dbfs:/"):].lstrip("/")
    if path.startswith("file:"):
        return "file://" + "/" + path[len("file:"):].lstrip("/")
    if "://" not in path:
        return "file://" + os.path.abspath(path)
    return path


def file_meta(url: str) -> GoldFile:
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(url)
    with filesystem.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    return GoldFile(url, tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)))


def plan_gold(tables, version: Optional[int] = None, name: str = "gold") -> GoldPlan:
    """Resolve the gold version (latest when None), list its Parquet files and check they hold its rows."""
    if not tables.exists(name):
        raise GoldDataError(f"train: no '{name}' table at {tables.location(name)}: run the gold stage first")
    version = tables.version(name) if version is None else int(version)
    df = tables.read(name, version)
    missing = [c for c in COLUMNS_IN if c not in df.columns]
    if missing:
        raise GoldDataError(f"train: gold version {version} lacks column(s) {missing} (has {df.columns})")
    urls = [reader_url(p) for p in tables.files(name, version)]
    with ThreadPoolExecutor(8) as pool:
        files = tuple(f for f in pool.map(file_meta, urls) if f.rows > 0)
    rows = df.count()
    plan = GoldPlan(tables.location(name), version, files)
    if plan.rows != rows:
        raise GoldDataError(
            f"train: gold version {version} has {rows:,} rows but its {len(files)} Parquet files hold "
            f"{plan.rows:,}: the table uses deletion vectors or is not plain Parquet, which petastorm "
            "cannot stream; rewrite gold (gold stage) without deletion vectors")
    if rows == 0:
        raise GoldDataError(f"train: gold version {version} at {plan.table} is empty")
    log.info("gold %s version %d: %d rows in %d files", plan.table, version, rows, len(files))
    return plan


def shard_files(files: tuple[GoldFile, ...] | list[GoldFile], world_size: int) -> list[list[GoldFile]]:
    """Whole files per rank, balanced by rows (largest first to the lightest rank); same on every rank."""
    if len(files) < world_size:
        raise GoldDataError(f"train: gold has {len(files)} non-empty Parquet file(s) but training runs "
                            f"{world_size} processes; each process reads whole files, so write gold with "
                            f"at least {world_size} files (more partitions) or use fewer processes")
    shards: list[list[GoldFile]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for f in sorted(files, key=lambda f: (-f.rows, f.url)):
        r = min(range(world_size), key=lambda i: (load[i], i))
        shards[r].append(f)
        load[r] += f.rows
    return [sorted(s, key=lambda f: f.url) for s in shards]


def steps_per_epoch(shards: list[list[GoldFile]], batch_size: int) -> int:
    """Steps of one epoch when every row is usable: the smallest shard decides (ranks step together)."""
    return min(sum(f.rows for f in s) for s in shards) // batch_size


def quiet_petastorm() -> None:
    """Silence petastorm's per-row-group pyarrow deprecation warnings; give its workers time to start."""
    import petastorm.workers_pool.process_pool as process_pool

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
    warnings.filterwarnings("ignore", message="schema_fields behavior has changed")  # exact names here
    logging.getLogger("petastorm").setLevel(logging.WARNING)  # "Recovering rowgroup information" per reader
    process_pool._KEEP_TRYING_WHILE_ZMQ_AGAIN_IS_RAIZED_TIMEOUT_S = max(
        WORKER_START_TIMEOUT_S, process_pool._KEEP_TRYING_WHILE_ZMQ_AGAIN_IS_RAIZED_TIMEOUT_S)


@dataclass
class Batch:
    images: torch.Tensor           # uint8 (B, 3, S, S); normalised on the device
    tokens: torch.Tensor           # int64 (B, context_length)
    vecap: int                     # samples whose text is the VeCap
    keys: list[str]                # gold keys, in batch order


@dataclass
class EpochCounts:
    epoch: int
    rows_expected: int             # rows of this rank's files in the gold version
    rows_streamed: int = 0         # rows petastorm delivered
    rows_trained: int = 0          # rows that went into a batch the loop consumed
    rows_skipped: int = 0          # image did not decode, or no text
    rows_unused: int = 0           # streamed and usable but left when the epoch ended (ranks step together)
    skipped_keys: list = field(default_factory=list)

    def check(self, rank: int, table: str, version: int) -> None:
        if self.rows_streamed != self.rows_expected:
            raise GoldDataError(
                f"train rank {rank} epoch {self.epoch}: petastorm streamed {self.rows_streamed:,} rows but "
                f"this rank's files of {table} version {version} hold {self.rows_expected:,}")
        accounted = self.rows_trained + self.rows_skipped + self.rows_unused
        if accounted != self.rows_streamed:
            raise GoldDataError(f"train rank {rank} epoch {self.epoch}: streamed {self.rows_streamed:,} rows "
                                f"but trained + skipped + unused = {accounted:,}")


@dataclass(frozen=True)
class StreamSettings:
    """One rank's reading settings: the reader fields of the `train` section, plus the model's resolved
    image size and text context length."""

    samples: SampleSettings
    context_length: int
    batch_size: int
    shuffle_buffer: int
    pool: str
    workers: int

    @classmethod
    def from_config(cls, t: TrainConfig, image_size: int, context_length: int) -> "StreamSettings":
        return cls(samples=SampleSettings.from_config(t, image_size), context_length=context_length,
                   batch_size=t.batch_size, shuffle_buffer=t.shuffle_buffer, pool=t.reader_pool,
                   workers=t.reader_workers)


class RankStream:
    """This rank's petastorm readers, started once and read epoch after epoch (worker start-up is slow)."""

    def __init__(self, files: list[GoldFile], settings: StreamSettings, rank: int, start_epoch: int = 0):
        from petastorm import make_batch_reader

        if settings.pool not in POOLS:
            raise ValueError(f"train.reader_pool must be one of {POOLS}, got {settings.pool!r} "
                             "(the thread pool was seen to lose whole epochs silently)")
        if not files:
            raise GoldDataError(f"train rank {rank}: no gold files to read")
        quiet_petastorm()
        self.settings, self.rank, self.next_epoch = settings, rank, start_epoch
        n = min(settings.workers, len(files))
        groups = [files[i::n] for i in range(n)]
        # Per reader, in reading order: (file, row group index, rows the table version says it holds).
        self.expected = [[(f.url, i, rows) for f in g for i, rows in enumerate(f.row_groups)] for g in groups]
        self.rows_per_epoch = sum(f.rows for f in files)
        self.readers = []
        try:
            for group, expected in zip(groups, self.expected):
                spec = transform_spec(settings.samples, settings.context_length, start_epoch, len(expected))
                self.readers.append(make_batch_reader(
                    [f.url for f in group], schema_fields=COLUMNS_IN, reader_pool_type=settings.pool,
                    workers_count=1, shuffle_row_groups=False, shuffle_rows=False, num_epochs=None,
                    transform_spec=spec))
        except BaseException:
            self.close()
            raise

    def epoch(self, epoch: int) -> "EpochReader":
        if epoch != self.next_epoch:
            raise RuntimeError(f"train rank {self.rank}: epochs are read in order; expected epoch "
                               f"{self.next_epoch}, asked for {epoch}")
        self.next_epoch += 1
        return EpochReader(self, epoch)

    def chunks(self, epoch: int) -> Iterator:
        """The row groups of one epoch: one from each reader in turn, each checked against the table."""
        done = [0] * len(self.readers)
        while any(d < len(e) for d, e in zip(done, self.expected)):
            for i, reader in enumerate(self.readers):
                if done[i] == len(self.expected[i]):
                    continue
                try:
                    chunk = next(reader)
                except StopIteration:
                    raise GoldDataError(f"train rank {self.rank} epoch {epoch}: reader {i} stopped after "
                                        f"{done[i]} of {len(self.expected[i])} row groups") from None
                url, group, want = self.expected[i][done[i]]
                if len(chunk.key) != want:
                    raise GoldDataError(f"train rank {self.rank} epoch {epoch}: row group {group} of {url} "
                                        f"came with {len(chunk.key)} rows, the table version says {want}")
                done[i] += 1
                yield chunk

    def close(self) -> None:
        for reader in self.readers:
            try:
                reader.stop()
                reader.join()
            except Exception as e:  # closing must not hide the error that got us here
                log.warning("closing a petastorm reader: %s", e)
        self.readers = []


class EpochReader:
    """Batches of one epoch through a shuffle buffer; `finish()` reads the rest and checks the counts."""

    def __init__(self, stream: RankStream, epoch: int):
        s = stream.settings
        self.stream, self.epoch = stream, epoch
        self.batch_size, self.buffer_size = s.batch_size, s.shuffle_buffer
        self.rng = random.Random(mixing.seed_of("shuffle", s.samples.seed, epoch, stream.rank))
        self.counts = EpochCounts(epoch, stream.rows_per_epoch)
        self._chunks = stream.chunks(epoch)
        self._buffer: list[tuple[np.ndarray, np.ndarray, int, str]] = []
        self._exhausted = False

    def _fill(self, target: int) -> None:
        while len(self._buffer) < target and not self._exhausted:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._exhausted = True
                return
            self._add(chunk)

    def _add(self, chunk) -> None:
        c = self.counts
        c.rows_streamed += len(chunk.key)
        for key, image, tokens, source, ok in zip(chunk.key, chunk.image, chunk.tokens, chunk.source, chunk.ok):
            if ok:
                self._buffer.append((image, tokens, int(source), str(key)))
            else:
                c.rows_skipped += 1
                if len(c.skipped_keys) < 20:
                    c.skipped_keys.append(str(key))

    def next_batch(self) -> Optional[Batch]:
        """The next batch, or None when this rank has no full batch left in the epoch."""
        self._fill(self.buffer_size + self.batch_size)
        if len(self._buffer) < self.batch_size:
            return None
        if self.buffer_size == 0:
            rows, self._buffer = self._buffer[:self.batch_size], self._buffer[self.batch_size:]
        else:
            rows = []
            for _ in range(self.batch_size):  # draw without replacement: swap the pick with the last row
                j = self.rng.randrange(len(self._buffer))
                self._buffer[j], self._buffer[-1] = self._buffer[-1], self._buffer[j]
                rows.append(self._buffer.pop())
        self.counts.rows_trained += self.batch_size
        images = torch.from_numpy(np.stack([r[0] for r in rows]))
        tokens = torch.from_numpy(np.stack([r[1] for r in rows])).long()
        return Batch(images, tokens, sum(r[2] == SOURCES[mixing.VECAP] for r in rows), [r[3] for r in rows])

    def finish(self) -> EpochCounts:
        """Read what is left of the epoch (the readers must stand at the next epoch) and check the counts."""
        for chunk in self._chunks:
            self._add(chunk)
        self._exhausted = True
        self.counts.rows_unused = len(self._buffer)
        self._buffer = []
        return self.counts
