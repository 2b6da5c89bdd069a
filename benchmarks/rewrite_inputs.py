"""Inputs of the rewrite benchmarks: real web AltTexts with stand-in captions, and tables made from them.

The AltTexts are real (../shared/data/web-alttext/alttext-10k.parquet), but their images are not
available (no network), so there is no real caption for them. STAND-IN: each AltText is paired with a
COCO-mini human caption (../shared/data/coco-mini/captions.json) drawn at random (seeded). The pair
therefore usually describes two different images: the rewriter is asked to fuse unrelated texts,
which is harder than the real task, and a faithful fusion of such a pair still has to keep the
AltText's names and the caption's objects, which is what the quality benchmark measures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random

import pandas as pd

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
ALTTEXT = os.path.join(DATA, "web-alttext", "alttext-10k.parquet")
COCO = os.path.join(DATA, "coco-mini", "captions.json")


def require_data() -> None:
    for p in (ALTTEXT, COCO):
        if not os.path.exists(p):
            raise SystemExit(f"real data not found: {p} (the benchmark needs ../shared/data)")


def stand_in_pairs(n: int, seed: int = 0) -> pd.DataFrame:
    """n rows: key, alt_text (real, sampled without replacement), caption (a random COCO-mini caption)."""
    require_data()
    alts = pd.read_parquet(ALTTEXT)["TEXT"].dropna().astype(str)
    alts = alts.sample(n=min(n, len(alts)), random_state=seed).tolist()
    with open(COCO) as f:
        captions = [a["caption"].strip() for a in json.load(f)["annotations"]]
    rng = random.Random(seed)
    return pd.DataFrame({"key": [hashlib.sha256(f"bench-{seed}-{i}".encode()).hexdigest()[:24] for i in range(len(alts))],
                         "alt_text": alts, "caption": [rng.choice(captions) for _ in alts]})


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 120, 120)).save(buf, format="JPEG")
    return buf.getvalue()


def write_tables(spark, tables, pairs: pd.DataFrame, captioner: str) -> None:
    """bronze rows (a placeholder image: the rewriter never reads it) and the captions of `captioner`."""
    from veclip.ingest.text import clean_alt_text
    from veclip.schemas import BRONZE, CAPTIONS

    img, now = tiny_jpeg(), dt.datetime(2026, 1, 1)
    sha = hashlib.sha256(img).hexdigest()
    bronze = [(k, None, img, sha, 8, 8, "JPEG", "RGB", a, clean_alt_text(a), "bench", k, "parquet", now)
              for k, a in zip(pairs["key"], pairs["alt_text"])]
    caps = [(k, captioner, c, "stand-in/coco-mini", None, None, None, "{}", None, now, now)
            for k, c in zip(pairs["key"], pairs["caption"])]
    tables.merge("bronze", spark.createDataFrame(bronze, BRONZE), ["key"])
    tables.merge("captions", spark.createDataFrame(caps, CAPTIONS), ["key", "captioner"])
