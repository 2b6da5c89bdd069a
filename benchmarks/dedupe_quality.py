"""Near-duplicate image benchmark: precision and recall of the pHash rule on labelled real images.

    .venv/bin/python benchmarks/dedupe_quality.py [--cifar-per-class 100] [--out work/benchmarks]

Originals: the 159 COCO images of ../shared/data/coco-mini and CIFAR-10 test images (10 classes, so
many distinct photos of the same kind of scene: two cats, two ships). Each original gets one copy per
augmentation (re-encode, lossless re-save, resize, crop 1-4%, colour shift, watermark) and two
combined ones (resize + crop, colour + watermark). Pairs:
  positive = (original, one of its copies): should match;
  negative = two items (originals or copies) of different originals: should not.
For each threshold t, a pair is predicted a duplicate when its pHash distance is <= t; precision and
recall are over those pairs. "after index" also requires the pair to be a candidate of the stage's pHash
index (veclip.dedupe.groups.shares_key: the numpy twin of the Spark block index). Prints the curve and
saves a PNG (matplotlib) or a CSV.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.bronze_fixture import AUGMENTS, colour, crop, resize, watermark  # noqa: E402
from veclip.config import load_config  # noqa: E402
from veclip.dedupe.groups import shares_key  # noqa: E402
from veclip.dedupe.phash import hamming, hamming_matrix  # noqa: E402
from veclip.dedupe.pixels import hash_images  # noqa: E402

DATA = os.environ.get("VECLIP_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
COMBOS = {"resize+crop": lambda d, s: crop(resize(d, s), s), "colour+watermark": lambda d, s: watermark(colour(d, s), s)}


def load_originals(cifar_per_class: int) -> tuple[list[bytes], list[str]]:
    coco = sorted(glob.glob(os.path.join(DATA, "coco-mini", "images", "*.jpg")))
    cifar_path = os.path.join(DATA, "cifar10", "test.parquet")
    if not coco or not os.path.exists(cifar_path):
        sys.exit(f"real data not found under {DATA} (set VECLIP_SHARED_DATA)")
    cifar = pd.read_parquet(cifar_path).groupby("label").head(cifar_per_class)
    images = [open(p, "rb").read() for p in coco] + list(cifar.jpeg)
    kinds = ["coco"] * len(coco) + [f"cifar:{n}" for n in cifar.label_name]
    return images, kinds


def build(images: list[bytes]) -> pd.DataFrame:
    """One row per item: source index, augmentation ('' for the original), pHash."""
    rows = []
    augments = {**AUGMENTS, **COMBOS}
    for i, data in enumerate(images):
        rows.append((i, "", data))
        rows.extend((i, name, fn(data, i)) for name, fn in augments.items())
    df = pd.DataFrame(rows, columns=["source", "augment", "data"])
    h = hash_images(list(df.data))
    if h.hash_error.notna().any() or h.phash.isna().any():
        print(f"warning: {h.phash.isna().sum()} items without a pHash (flat or undecodable) are left out")
    df["phash"] = h.phash
    return df[df.phash.notna()].drop(columns="data").reset_index(drop=True)


def index_found(a: np.ndarray, b: np.ndarray, d) -> np.ndarray:
    """True where the stage's pHash index makes the pair a candidate (all pairs when exhaustive)."""
    if d.phash_index == "exhaustive":
        return np.ones(np.shape(a), dtype=bool)
    return shares_key(a, b, d.phash_blocks, d.phash_key_blocks)


def distances(df: pd.DataFrame, max_t: int, chunk: int = 512):
    """Positive distances (original, copy); the histogram of all negative distances; and the negative
    pairs within max_t as rows (i, j, distance) of `df`."""
    h = df.phash.to_numpy(dtype=np.int64)
    src = df.source.to_numpy()
    orig = df[df.augment == ""].set_index("source").phash
    copies = df[df.augment != ""]
    pos = hamming(orig[copies.source].to_numpy(dtype=np.int64), copies.phash.to_numpy(dtype=np.int64))
    neg_hist = np.zeros(65, dtype=np.int64)
    close = []
    for s in range(0, len(h), chunk):
        m = hamming_matrix(h[s:s + chunk], h)
        rows = np.arange(s, min(s + chunk, len(h)))
        neg = (src[rows, None] != src[None, :]) & (rows[:, None] < np.arange(len(h))[None, :])  # each pair once
        neg_hist += np.bincount(m[neg], minlength=65)
        i, j = np.nonzero(neg & (m <= max_t))
        close.append(np.stack([rows[i], j, m[i, j]], axis=1))
    return pos, neg_hist, np.concatenate(close)


def curve(df, pos, neg_hist, close_neg, d, max_t: int) -> pd.DataFrame:
    h = df.phash.to_numpy(dtype=np.int64)
    orig = df[df.augment == ""].set_index("source").phash
    copies = df[df.augment != ""]
    found_pos = index_found(orig[copies.source].to_numpy(dtype=np.int64), copies.phash.to_numpy(dtype=np.int64), d)
    found_neg = index_found(h[close_neg[:, 0]], h[close_neg[:, 1]], d)
    rows = []
    for t in range(max_t + 1):
        tp, fp = int((pos <= t).sum()), int(neg_hist[:t + 1].sum())
        tp_l, fp_l = int(((pos <= t) & found_pos).sum()), int(((close_neg[:, 2] <= t) & found_neg).sum())
        rows.append(dict(threshold=t, recall=tp / len(pos), precision=tp / max(tp + fp, 1), false_pairs=fp,
                         recall_lsh=tp_l / len(pos), precision_lsh=tp_l / max(tp_l + fp_l, 1)))
    return pd.DataFrame(rows)


def same_kind_false_pairs(df: pd.DataFrame, close_neg: np.ndarray, t: int) -> str:
    """False matches at threshold t between distinct photos of the same kind (COCO, or one CIFAR class)."""
    hit = close_neg[close_neg[:, 2] <= t]
    kinds = df.kind.to_numpy()
    same = kinds[hit[:, 0]] == kinds[hit[:, 1]]
    return f"{int(same.sum())} of {len(hit)} false pairs are between distinct photos of the same kind"


def save_plot(table: pd.DataFrame, default: int, out: str) -> str:
    os.makedirs(out, exist_ok=True)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = os.path.join(out, "dedupe_quality.csv")
        table.to_csv(path, index=False)
        return path
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(table.threshold, table.precision, "o-", label="precision")
    ax.plot(table.threshold, table.recall, "s-", label="recall")
    ax.plot(table.threshold, table.recall_lsh, "--", label="recall after the pHash index")
    ax.axvline(default, color="grey", lw=0.8, label=f"default ({default})")
    ax.set_xlabel("pHash Hamming threshold (bits)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    ax.set_title("Near-duplicate images: COCO + CIFAR-10 copies")
    path = os.path.join(out, "dedupe_quality.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar-per-class", type=int, default=100)
    ap.add_argument("--max-threshold", type=int, default=20)
    ap.add_argument("--out", default="work/benchmarks")
    args = ap.parse_args()
    d = load_config(None, bare=True).dedupe
    t0 = time.monotonic()
    images, kinds = load_originals(args.cifar_per_class)
    df = build(images)
    df["kind"] = [kinds[s] for s in df.source]
    pos, neg_hist, close_neg = distances(df, args.max_threshold)
    table = curve(df, pos, neg_hist, close_neg, d, args.max_threshold)
    n_orig = (df.augment == "").sum()
    print(f"{n_orig} originals ({sum(k == 'coco' for k in kinds)} COCO, {sum(k != 'coco' for k in kinds)} CIFAR-10),"
          f" {len(df) - n_orig} copies; {len(pos):,} positive and {int(neg_hist.sum()):,} negative pairs "
          f"({time.monotonic() - t0:.0f}s)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    t = d.phash_max_hamming
    row = table.set_index("threshold").loc[t]
    print(f"\nat the default threshold {t}: precision {row.precision:.4f} (target >= 0.98), recall {row.recall:.4f} "
          f"(target >= 0.90); after the pHash index: precision {row.precision_lsh:.4f}, recall {row.recall_lsh:.4f}")
    copies = df[df.augment != ""].assign(d=pos)
    orig = df[df.augment == ""].set_index("source").phash
    copies["found"] = index_found(orig[copies.source].to_numpy(dtype=np.int64), copies.phash.to_numpy(dtype=np.int64), d)
    print(f"recall by augmentation at the default threshold (index: {d.phash_index}, always found <= "
          f"{d.phash_guaranteed_hamming} bits):")
    by = pd.DataFrame({"threshold only": (copies.d <= t), "after index": (copies.d <= t) & copies.found,
                       "median bits": copies.d}).groupby(copies.augment)
    print(by.agg({"threshold only": "mean", "after index": "mean", "median bits": "median"}).round(4).to_string())
    print(same_kind_false_pairs(df, close_neg, t))
    print("recall by data set:", (copies.d <= t).groupby(copies.kind.str.split(":").str[0]).mean().round(4).to_dict())
    print(f"saved {save_plot(table, t, args.out)}")


if __name__ == "__main__":
    main()
