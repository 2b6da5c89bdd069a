"""Dedupe building blocks without Spark: image hashes on real images, text rules, LSH helpers, config."""

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.bronze_fixture import AUGMENTS, cc12m_samples
from tests.conftest import shared_path
from veclip.config import ConfigError, load_config
from veclip.dedupe import phash as P
from veclip.dedupe import text as T
from veclip.dedupe.features import band_rows, text_row_features
from veclip.dedupe.groups import block_widths, key_masks, shares_key
from veclip.dedupe.pixels import hash_images, pixel_sha256


@pytest.fixture(scope="module")
def images(cc12m_shard):
    return [data for _, data, _, _ in cc12m_samples(str(cc12m_shard))][:12]


@pytest.fixture(scope="module")
def originals(images):
    return hash_images(images)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_pixel_hash_survives_lossless_reencode_not_pixel_changes(images):
    img = Image.open(io.BytesIO(images[0]))
    img.load()
    same = [images[0], _png(img), _png(img.convert("RGBA")), _png(img.convert("P", palette=Image.Palette.WEB)
                                                                   .convert("RGB"))]
    out = hash_images(same)
    assert out.pixel_sha256[0] == out.pixel_sha256[1] == out.pixel_sha256[2]
    assert out.pixel_sha256[3] != out.pixel_sha256[0]            # palette quantisation changed pixels
    flipped = img.copy()
    flipped.putpixel((0, 0), tuple(255 - v for v in img.getpixel((0, 0))))
    assert pixel_sha256(flipped) != pixel_sha256(img)
    transparent = img.convert("RGBA")
    transparent.putpixel((0, 0), (0, 0, 0, 0))
    assert pixel_sha256(transparent) != pixel_sha256(img)


def test_every_copy_is_near_and_distinct_images_are_far(images, originals):
    base = originals.phash.to_numpy(dtype=np.int64)
    for name, fn in AUGMENTS.items():
        copies = hash_images([fn(d, i) for i, d in enumerate(images)]).phash.to_numpy(dtype=np.int64)
        assert P.hamming(base, copies).max() <= 16, name
        assert np.median(P.hamming(base, copies)) <= 10, name
    dist = P.hamming_matrix(base, base)[np.triu_indices(len(base), 1)]
    assert dist.min() > 10
    assert 26 <= dist.mean() <= 38                                # about half the bits differ


def test_phash_is_balanced_and_insensitive_to_brightness(images):
    g = np.stack([P_gray(d) for d in images[:4]])
    h = P.phash_batch(g)
    assert all(bin(int(x) & (2**64 - 1)).count("1") == 32 for x in h)   # median split: 32 ones
    assert (P.hamming(h, P.phash_batch(np.clip(g * 0.9 + 12, 0, 255))) <= 2).all()


def P_gray(data: bytes) -> np.ndarray:
    from veclip.dedupe.pixels import gray32

    return gray32(Image.open(io.BytesIO(data)))


def test_torch_path_gives_the_same_coefficients_as_numpy(images):
    torch = pytest.importorskip("torch")
    g = np.stack([P_gray(d) for d in images])
    d = P.dct_matrix(P.SIZE)[:11]
    ref = d @ g.astype(np.float64) @ d.T
    assert np.allclose(P._dct_torch(g, d, "cpu"), ref, atol=1e-9)
    if torch.cuda.is_available():     # on a GPU executor: the same bits as numpy
        assert (P.phash_batch(g, "cuda:0") == P.phash_batch(g, "cpu")).all()


def test_bad_rows_get_an_error_and_do_not_spoil_the_batch(images):
    flat = _png(Image.new("RGB", (64, 48), (200, 30, 30)))
    out = hash_images([images[0], b"", images[1][:300], b"not an image", flat, images[1]])
    assert out.hash_error.isna().tolist() == [True, False, False, False, True, True]
    assert all(e.startswith("undecodable_image: ") for e in out.hash_error[1:4])
    assert out.phash.isna().tolist() == [False, True, True, True, True, False]   # flat: no pHash
    assert out.pixel_sha256[4] is not None
    assert out.phash[5] == hash_images([images[1]]).phash[0]


def test_hamming_counts_bits_on_signed_values():
    a = np.array([0, -1, 1 << 62, -(1 << 63)], dtype=np.int64)
    assert P.hamming(a, np.zeros(4, dtype=np.int64)).tolist() == [0, 64, 1, 1]
    assert P.hamming_matrix(a, a).diagonal().tolist() == [0, 0, 0, 0]


def test_normalise_and_boilerplate():
    assert T.normalise("  Red Square,   MOSCOW!! ") == "red square moscow"
    assert T.normalise("Ｃａｆé—“menu”") == "café menu"
    assert T.normalise(None) is None
    for raw in ["image", "Click to Enlarge", "IMG_1234.JPG", "DSC 0042", "12345", "-", "", "untitled"]:
        assert T.is_boilerplate(T.normalise(raw), raw), raw
    assert T.is_boilerplate(T.normalise("Example Store"), extra={"example store"})
    for raw in ["Red Square is a city square in Moscow", "Photography lenses", "A 1969 Ford Mustang"]:
        assert not T.is_boilerplate(T.normalise(raw), raw), raw


def test_text_features_flag_boilerplate_and_score_words():
    out = text_row_features(pd.Series(["Click to enlarge", "A red, red bus", None]),
                            pd.Series(["Click to enlarge", "A red, red bus", None]), frozenset())
    assert out.alt_text_norm.tolist() == ["click to enlarge", "a red red bus", None]
    assert out.alt_text_boilerplate.tolist() == [True, False, True]
    assert out.text_score.tolist() == [3, 3, 0]


def test_minhash_bands_find_near_texts_and_not_unrelated_ones():
    texts = ["vintage leather handbag with gold buckle and long strap",
             "vintage leather handbag with gold buckle and short strap",
             "vintage leather handbag with gold buckle and long strap",
             "seal spotted playing in the shallows near the harbour"]
    assert T.jaccard(texts[0], texts[1], 2) == pytest.approx(6 / 10)
    sig = T.minhash(texts, 2, 64, seed=1)
    assert (sig[0] == sig[2]).all() and not (sig[0] == sig[3]).any()
    keys = np.stack(band_rows(pd.Series(texts), load_config(None).dedupe))
    assert (keys[0] == keys[2]).all()
    assert (keys[0] == keys[1]).any()                       # J = 0.6: very likely a shared band
    assert not (keys[0] == keys[3]).any()
    estimate = np.mean(T.minhash(texts[:2], 2, 512, seed=3)[0] == T.minhash(texts[:2], 2, 512, seed=3)[1])
    assert abs(estimate - 0.6) < 0.1                          # MinHash estimates the Jaccard similarity


def test_block_index_always_finds_pairs_within_the_guarantee_and_rarely_unrelated_ones():
    assert block_widths(64, 8) == [8] * 8 and block_widths(64, 5) == [13, 13, 13, 13, 12]
    masks = key_masks(8, 4)
    assert len(masks) == 70 and len(set(masks)) == 70 and all(bin(m).count("1") == 32 for m in masks)
    rng = np.random.default_rng(3)
    a = rng.integers(-(2**63), 2**63 - 1, size=4000, dtype=np.int64)

    def flip(bits_per_row):
        masks = [sum(1 << int(b) for b in bits) for bits in bits_per_row]
        return a ^ np.array(masks, dtype=np.uint64).view(np.int64)

    # Worst case for the index: every flipped bit in a block of its own.
    spread = [rng.choice(8, d, replace=False) * 8 + rng.integers(0, 8, d) for d in (4, 3, 2, 1) * 1000]
    assert shares_key(a, flip(spread), 8, 4).all()
    five = [rng.choice(8, 5, replace=False) * 8 + rng.integers(0, 8, 5) for _ in range(4000)]
    assert not shares_key(a, flip(five), 8, 4).any()            # 5 blocks differ: beyond the guarantee
    packed = [rng.choice(8, 2, replace=False)[:, None] * 8 + rng.choice(8, (2, 3), replace=False) for _ in range(4000)]
    assert shares_key(a, flip([p.ravel() for p in packed]), 8, 4).all()   # 6 bits in 2 blocks: found
    b = rng.integers(-(2**63), 2**63 - 1, size=4000, dtype=np.int64)
    assert not shares_key(a, b, 8, 4).any()                     # unrelated: 70 / 2^32 per pair


def test_config_is_validated():
    with pytest.raises(ConfigError, match="dedupe.device"):
        load_config(None, ["dedupe.device=tpu"])
    with pytest.raises(ConfigError, match="phash_key_blocks"):
        load_config(None, ["dedupe.phash_key_blocks=1"])          # 8-bit keys: quadratic
    with pytest.raises(ConfigError, match="phash_key_blocks"):
        load_config(None, ["dedupe.phash_key_blocks=8"])
    with pytest.raises(ConfigError, match="phash_index"):
        load_config(None, ["dedupe.phash_index=bands"])
    d = load_config(None, ["dedupe.boilerplate_texts=Example Store", "dedupe.phash_blocks=10",
                           "dedupe.phash_key_blocks=5"]).dedupe
    assert d.boilerplate_texts == ["Example Store"]
    assert d.phash_guaranteed_hamming == 5 and d.phash_tables == 252
    assert load_config(None, bare=True).dedupe.phash_guaranteed_hamming == 4
    assert load_config(None, ["dedupe.phash_index=exhaustive"]).dedupe.phash_guaranteed_hamming == 64
