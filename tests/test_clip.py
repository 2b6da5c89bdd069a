"""CLIP model folders: what the trainer writes is what evaluation and MLflow load."""

import pytest
import torch
from PIL import Image

from veclip import clip


def test_tiny_config_round_trips_through_open_clip_folder(tmp_path):
    torch.manual_seed(0)
    model, _, pre_val, tok = clip.create("veclip-tiny")
    model.eval()
    clip.save(model, "veclip-tiny", tmp_path / "m")
    loaded, pre2, tok2 = clip.load(tmp_path / "m")
    img = pre_val(Image.new("RGB", (80, 60), (200, 30, 30))).unsqueeze(0)
    text = tok(["a red square"])
    with torch.inference_mode():
        a = model.encode_image(img), model.encode_text(text)
        b = loaded.encode_image(pre2(Image.new("RGB", (80, 60), (200, 30, 30))).unsqueeze(0)), loaded.encode_text(tok2(["a red square"]))
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown CLIP model 'vit-nope'"):
        clip.create("vit-nope")


def test_load_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an open_clip model folder"):
        clip.load(tmp_path)
