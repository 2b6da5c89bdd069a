"""The small shared helpers whose copies used to disagree: dtype `auto`, cutting at a word, transparency."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from veclip.caption.clean import bound
from veclip.dedupe.pixels import gray32
from veclip.devices import auto_dtype, dtype_name, pick_device
from veclip.imaging import to_rgb
from veclip.text import cut_at_word


@pytest.mark.parametrize("device, bf16, expected", [
    ("cuda:0", True, "bfloat16"), ("cuda:1", False, "float16"), ("cuda", False, "float16"),
    ("cpu", True, "float32"), ("cpu", False, "float32"),
])
def test_dtype_auto_is_bf16_on_a_gpu_that_has_it_else_fp16_on_cuda_else_fp32(device, bf16, expected):
    assert auto_dtype(device, bf16_supported=bf16) == expected


def test_an_explicit_dtype_is_kept_and_an_unknown_one_refused():
    assert dtype_name("float16", "cpu") == "float16" and dtype_name("auto", "cpu") == "float32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        dtype_name("fp8", "cpu")


def test_an_explicit_device_is_kept():
    assert pick_device("cpu") == "cpu" and pick_device("cuda:3") == "cuda:3"
    assert pick_device("auto") == "cpu" or pick_device("auto").startswith("cuda:")


def test_captions_and_alt_texts_are_cut_at_a_word_the_same_way():
    text = "aaaaaaaaaa b cc"            # the word "b" ends exactly at the limit: it stays
    assert cut_at_word(text, 12) == bound(text, 12) == "aaaaaaaaaa b"
    assert bound("a dog, a cat, a bird", 13) == "a dog, a cat"   # the caption also drops a dangling comma


def test_dedupe_flattens_transparency_on_white_as_the_decoder_does():
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 4), dtype=np.uint8), "RGBA")
    expected = np.asarray(to_rgb(rgba).convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
    assert np.array_equal(gray32(rgba), expected)
    assert to_rgb(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
