"""Ingest throughput, per core: image checks (header only / draft decode / full decode) and downloads
(concurrency 1 vs `ingest.http.concurrency`) against a local server that adds a fixed latency.

    .venv/bin/python benchmarks/ingest_throughput.py [--shard ../shared/data/cc12m-sample/cc12m-train-0000.tar]
        [--repeat 10] [--latency-ms 50] [--urls 64] [--concurrency 16]

Prints figures and ratios side by side; no Spark (these are the per-task costs Spark multiplies).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from tests.crawlgen import ImageServer, real_images  # noqa: E402
from veclip.config.ingest import HttpConfig, IngestConfig  # noqa: E402
from veclip.ingest.fetch import fetch_all  # noqa: E402
from veclip.ingest.images import inspect_image  # noqa: E402

DEFAULT_SHARD = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cc12m-sample",
                             "cc12m-train-0000.tar")


def header_only(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.size


def full_decode(data: bytes) -> None:
    with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as img:
        img.load()


def rate(fn, images: list[bytes], repeat: int) -> float:
    for data in images:  # warm-up: Pillow imports its plugins on first use
        fn(data)
    t0 = time.perf_counter()
    for _ in range(repeat):
        for data in images:
            fn(data)
    return repeat * len(images) / (time.perf_counter() - t0)


def bench_checks(images: list[bytes], repeat: int) -> None:
    limits = IngestConfig()
    rates = {"header only (size, no pixels)": rate(header_only, images, repeat),
             "inspect_image (draft decode, the stage)": rate(lambda d: inspect_image(d, limits), images, repeat),
             "full decode (Image.load)": rate(full_decode, images, repeat)}
    base = rates["full decode (Image.load)"]
    mb = sum(map(len, images)) / len(images) / 1e3
    print(f"\nimage checks: {len(images)} real CC12M JPEGs (~{mb:.0f} KB each) x {repeat}, one core")
    for name, r in rates.items():
        print(f"  {name:<42} {r:9.1f} img/s   {r / base:5.2f}x full decode")


def bench_fetch(images: list[bytes], n: int, latency_s: float, concurrency: int) -> None:
    served = {f"{i}.jpg": d for i, d in enumerate(images)}
    print(f"\ndownloads: {n} URLs, server latency {latency_s * 1e3:.0f} ms per image, one task")
    with ImageServer(served, latency_s=latency_s, lifetime_s=300) as srv:
        urls = [srv.url(f"/img/{i % len(images)}.jpg") for i in range(n)]
        rates = {}
        for c in (1, concurrency):
            s = IngestConfig(http=HttpConfig(timeout_s=10, concurrency=c, allow_private=True))
            t0 = time.perf_counter()
            got = fetch_all(urls, s)
            rates[c] = n / (time.perf_counter() - t0)
            ok = sum(r.data is not None for r in got)
            print(f"  concurrency {c:>3}: {rates[c]:8.1f} img/s   ({ok}/{n} ok)   {rates[c] / rates[1]:5.2f}x concurrency 1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shard", default=DEFAULT_SHARD)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--latency-ms", type=float, default=50)
    p.add_argument("--urls", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    if not os.path.exists(a.shard):
        print(f"real data not found: {a.shard} (pass --shard)", file=sys.stderr)
        return 2
    images = [data for _, _, data in real_images(a.shard)]
    bench_checks(images, a.repeat)
    bench_fetch(images, a.urls, a.latency_ms / 1e3, a.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
