"""The image decoder shared by caption and gold (veclip.imaging), through both stages' own functions:
bounded decoded memory for small files with huge pixel counts, 16-bit grey scaled rather than
clipped to white, Pillow's limit from the config, EXIF orientation. Real generated PNGs/JPEGs."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import REPO
from veclip.caption.predict import UndecodableImage, decode_image
from veclip.gold import _reencode, bound_jpeg
from veclip.imaging import output_pixels

HUGE = 9400  # 88.4 Mpx: under the default pixel limit (89.5 Mpx), as in the audit


def huge_png(path, side: int = HUGE) -> bytes:
    """A palette PNG of side x side pixels with a transparent index: ~100 KB on disk, 88 MB decoded."""
    tile = Image.linear_gradient("L").resize((side // 100, side // 100))
    img = tile.resize((side, side), Image.Resampling.NEAREST).convert("P")
    img.save(path, "PNG", transparency=img.getpixel((0, 0)))  # the top band is transparent
    return path.read_bytes()


def gradient16(width: int = 512, height: int = 32) -> bytes:
    """A 16-bit grey PNG (mode I;16), left to right 0 -> 65535."""
    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(np.tile(row, (height, 1))).save(buf, "PNG")
    return buf.getvalue()


PEAK = """
import json, resource, sys
from veclip.caption.predict import decode_image
from veclip.gold import bound_jpeg
data = open(sys.argv[1], "rb").read()
fn = {"caption": lambda: decode_image(data).size, "gold": lambda: __import__("PIL.Image").Image.open(
      __import__("io").BytesIO(bound_jpeg(data, 256, 90))).size}[sys.argv[2]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = fn()
print(json.dumps({"size": size, "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


@pytest.mark.parametrize("stage", ["caption", "gold"])
def test_a_small_png_with_huge_pixels_decodes_in_bounded_memory(tmp_path, stage):
    path = tmp_path / "huge.png"
    data = huge_png(path)
    assert len(data) < 400_000 and Image.open(path).size == (HUGE, HUGE)
    # A fresh process, so the peak resident memory is this decode's alone.
    out = subprocess.run([sys.executable, "-c", PEAK, str(path), stage], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    w, h = got["size"]
    # The palette image itself is 88 MB; expanding it to RGBA + RGB at full size took ~850 MB.
    assert got["peak_mb"] < 300, got
    if stage == "caption":
        assert 1024 <= min(w, h) < 2048 and w * h <= output_pixels(1024)
    else:
        assert min(w, h) == 256


def test_the_huge_png_is_reduced_with_its_content_and_transparency_kept(tmp_path):
    img = decode_image(huge_png(tmp_path / "huge.png"))
    a = np.asarray(img)
    assert img.mode == "RGB" and a.shape[0] == a.shape[1]
    assert (a[:3, :3] == 255).all()        # the transparent top band: flattened on white
    assert a.std() > 30                     # the gradient bands survive the reduction


def test_more_pixels_than_the_limit_is_a_clear_row_error_not_a_crash(tmp_path):
    data = huge_png(tmp_path / "huge.png")
    with pytest.raises(UndecodableImage, match=r"9400x9400 = 88,360,000 pixels, more than the limit of 50,000,000"):
        decode_image(data, max_pixels=50_000_000)
    run = _reencode(256, 90, max_pixels=50_000_000)  # gold's worker function: the row gets its gold_error
    [out] = list(run(iter([pd.DataFrame({"image": [data, gradient16()]})])))
    assert out["image"][0] is None and out["gold_error"][0].startswith("TooManyPixels: 9400x9400")
    assert out["image"][1] is not None and out["gold_error"][1] is None


def test_pillow_limit_is_set_from_the_config_in_the_worker():
    before = Image.MAX_IMAGE_PIXELS
    try:
        list(_reencode(256, 90, max_pixels=12_345_678)(iter([])))
        assert Image.MAX_IMAGE_PIXELS == 12_345_678
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_16_bit_grey_keeps_its_gradient_in_caption_and_gold():
    data = gradient16()
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = np.asarray(decode_image(data)).astype(int)
    assert rgb.shape == (32, 512, 3) and not (rgb == 255).all()
    row = rgb[0, :, 0]
    assert (rgb == row[None, :, None]).all()                           # grey, every row the same
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()  # the full ramp, in order
    assert np.abs(row - np.linspace(0, 255, 512)).max() <= 1            # scaled, not clipped
    gold = np.asarray(Image.open(io.BytesIO(bound_jpeg(data, 256, 90))).convert("L")).astype(int)
    means = gold.mean(axis=0)
    assert gold.shape == (32, 512) and means[:16].mean() < 20 and means[-16:].mean() > 235
    assert np.corrcoef(means, np.linspace(0, 255, 512))[0, 1] > 0.99


def test_exif_orientation_is_applied_after_reduction():
    img = Image.new("RGB", (3000, 1200), (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    w, h = decode_image(buf.getvalue(), max_side=512).size
    assert (w, h) == (600, 1500)  # reduced 2x (shorter side >= 512), then turned upright
