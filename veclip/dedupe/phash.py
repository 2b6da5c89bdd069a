"""Batched 64-bit perceptual hash (DCT pHash), vectorised in numpy or torch (GPU when there is one).

    gray = np.stack([...])                      # (B, 32, 32) grey images, values 0..255
    hashes = phash_batch(gray)                   # (B,) int64; None-free: flat images are masked by the caller
    hamming(hashes[0], hashes[1])                # bits that differ

Which hash and why: a DCT pHash (as phash.org / imagehash: 32x32 grey image -> 2-D DCT-II -> 64
low-frequency coefficients -> one bit each: above their median). It keeps only coarse structure, so
JPEG re-encoding, resizing, light colour/brightness/contrast shifts (the DC term is dropped; the median
threshold ignores contrast) and small overlays change few bits, while distinct photos differ in about
half of them. It is more robust than aHash/dHash to re-encoding and gamma, and a DCT over a batch is
two small matrix products, so it vectorises. One change from the usual 8x8 square of frequencies: we
keep the 64 lowest non-DC frequencies in zig-zag order (u+v <= 10 without (10, 0)), because a crop
of a few percent shifts the image and moves high diagonal frequencies most. On real COCO/CC12M/CIFAR
images (benchmarks/dedupe_quality.py) this put 88% of 1-4% crops within 10 bits instead of 78%, with
no more false matches. The median threshold gives exactly 32 one-bits, so every bit carries information
(and the distance between two hashes is always even: thresholds 10 and 11 select the same pairs).
Limit: 64 low frequencies of a tiny image say little. Among 8,000 CIFAR-10 airplanes and cars
(32x32, mostly an object on a plain background), 560 distinct pairs (0.002%) fell within 10 bits and
8% of the images had such a look-alike; web photos (COCO, CC12M) had none within 12 bits.

The grey 32x32 input comes from `veclip.dedupe.pixels` (PIL BOX resampling, i.e. an area average).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SIZE = 32          # side of the grey image the DCT sees
BITS = 64
# (u, v) frequencies kept: lowest u+v first (then u), DC left out, the first 64 (u+v <= 10).
FREQS = sorted(((u, v) for u in range(11) for v in range(11) if 0 < u + v <= 10),
               key=lambda f: (f[0] + f[1], f[0]))[:BITS]
_ROWS = 11         # DCT rows needed for FREQS
FLAT_STD = 1.0     # grey std (0..255) under which an image is "flat": no structure to hash

_POW2 = (np.uint64(1) << np.arange(BITS, dtype=np.uint64)).astype(np.uint64)
_U = np.array([f[0] for f in FREQS])
_V = np.array([f[1] for f in FREQS])


@lru_cache(maxsize=None)
def dct_matrix(n: int = SIZE) -> np.ndarray:
    """Orthonormal DCT-II matrix: (D @ x) is the DCT of column vector x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d


def low_frequencies(gray: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(B, 32, 32) grey -> (B, 64) DCT coefficients at FREQS, float64.

    Only the 11 needed rows of the DCT matrix are used: D11 @ X @ D11^T. On `cpu` this is numpy; any
    other device runs the same products in torch (float64, so CPU and GPU give the same bits).
    """
    if gray.ndim != 3 or gray.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"phash: expected grey images of shape (B, {SIZE}, {SIZE}), got {gray.shape}")
    d = dct_matrix(SIZE)[:_ROWS]
    c = d @ gray.astype(np.float64, copy=False) @ d.T if device == "cpu" else _dct_torch(gray, d, device)
    return c[:, _U, _V]


def _dct_torch(gray: np.ndarray, d: np.ndarray, device: str) -> np.ndarray:
    import torch

    dt = torch.from_numpy(d).to(device)
    xt = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float64)).to(device)
    return (dt @ xt @ dt.T).cpu().numpy()


def bits_to_int64(bits: np.ndarray) -> np.ndarray:
    """(B, 64) booleans -> (B,) int64; bit i of the hash is bits[:, i] (frequency FREQS[i])."""
    packed = (bits.astype(np.uint64) * _POW2).sum(axis=1, dtype=np.uint64)
    return packed.view(np.int64)


def phash_batch(gray: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(B, 32, 32) grey images -> (B,) int64 pHashes (Spark LongType; compare with `hamming`)."""
    if len(gray) == 0:
        return np.zeros(0, dtype=np.int64)
    coeffs = low_frequencies(gray, device)
    median = np.median(coeffs, axis=1, keepdims=True)
    return bits_to_int64(coeffs > median)


def is_flat(gray: np.ndarray) -> np.ndarray:
    """(B,) True where an image has (almost) no structure: its pHash would be rounding noise."""
    return gray.reshape(len(gray), -1).std(axis=1) < FLAT_STD


def hamming(a, b) -> np.ndarray:
    """Bitwise Hamming distance between int64 hashes (scalars or arrays, broadcast)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    by = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)
    return _POPCOUNT8[by].sum(axis=-1, dtype=np.int32)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances (len(a), len(b)); for benchmarks and tests, never the stage."""
    return hamming(np.asarray(a, dtype=np.int64)[:, None], np.asarray(b, dtype=np.int64)[None, :])


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)
