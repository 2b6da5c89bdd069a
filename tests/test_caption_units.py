"""Caption pieces without Spark: output cleaning, prompts, config, image decoding, and the real
tiny-model path (from_pretrained -> processor -> chat template -> left-padded batched generate)."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from veclip.caption.clean import bound, clean_caption
from veclip.caption.models import Captioner, CaptionerSpec, describe
from veclip.caption.predict import CaptionLoader, UndecodableImage, caption_images, decode_image
from veclip.caption.prompt import PAPER_PROMPT, prompt_sha256, render_prompt
from veclip.caption.tiny import MARKER, build_tiny_llava, build_tiny_vision_encoder_decoder
from veclip.config import ConfigError, load_config
from veclip.config.caption import CaptionConfig
from veclip.devices import torch_dtype


@pytest.mark.parametrize("raw, expected", [
    ("ASSISTANT: A dog runs on a beach.</s> USER: and now?", "A dog runs on a beach."),
    ("assistant\nA red car.<|im_end|>\n<|im_start|>user", "A red car."),
    ('  "A bowl of soup on a table."  ', "A bowl of soup on a table."),
    ("A man\n\n   with a   hat <image><pad>", "A man with a hat"),
    ("Two cats. ### Human: describe again", "Two cats."),
    ("User interface of a phone app", "User interface of a phone app"),  # 'User' without a colon is content
    ("<pad></s>", ""),
])
def test_clean_caption_removes_template_artefacts(raw, expected):
    assert clean_caption(raw) == expected


def test_captions_are_bounded_at_a_word_boundary():
    text = "a very long caption " * 40
    out = clean_caption(text, max_chars=50)
    assert len(out) <= 50 and text.startswith(out) and out.split()[-1] in ("a", "very", "long", "caption")
    assert bound("abcdefghij" * 10, 25) == ("abcdefghij" * 10)[:25]  # no space: a hard cut


def test_config_defaults_follow_the_paper():
    c = load_config(None, bare=True).caption
    assert c.prompt == PAPER_PROMPT == "Describe the image concisely, less than 20 words."
    assert c.model == "llava-hf/llava-1.5-7b-hf" and c.captioner_id == "llava-1.5-7b-hf"
    assert c.trust_remote_code is False and c.dtype == "auto"
    assert load_config("conf/databricks.yaml").caption.model == "llava-hf/llava-1.5-7b-hf"
    with pytest.raises(ConfigError, match="caption.captioner_id"):
        load_config(None, ["caption.captioner_id=has space"])
    with pytest.raises(ConfigError, match="caption.dtype"):
        load_config(None, ["caption.dtype=int8"])


def test_greedy_decoding_by_default_and_params_are_recorded():
    spec = CaptionerSpec.from_config(CaptionConfig(model="m", max_new_tokens=7))
    assert spec.generation_params() == {"max_new_tokens": 7, "do_sample": False, "num_beams": 1}
    beams = CaptionerSpec.from_config(CaptionConfig(model="m", generate_kwargs={"num_beams": 3}))
    assert '"num_beams": 3' in beams.generation_params_json()
    assert str(torch_dtype("auto", "cpu")) == "torch.float32"
    assert str(torch_dtype("auto", "cuda:0")) in ("torch.bfloat16", "torch.float16")   # float16: no native bf16


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_decode_image_handles_modes_and_reports_broken_bytes(cc12m_shard):
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent: flattened on white
    assert decode_image(_encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(_encode(Image.new("CMYK", (20, 20)), "JPEG")).mode == "RGB"
    assert decode_image(_encode(Image.new("L", (20, 20)), "PNG")).size == (20, 20)
    big = _encode(Image.new("RGB", (3000, 2000), (10, 20, 30)), "JPEG")
    assert max(decode_image(big, max_side=512).size) < 3000  # JPEG draft decoding: reduced scale
    for broken in (b"", None, b"GIF89a-nope", _encode(Image.new("RGB", (64, 64)), "JPEG")[:200]):
        with pytest.raises(UndecodableImage):
            decode_image(broken)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caption-models")
    return build_tiny_llava(str(tmp / "llava")), build_tiny_vision_encoder_decoder(str(tmp / "ved"))


def test_tiny_models_are_marked_as_random(models):
    for path in models:
        assert os.path.exists(os.path.join(path, MARKER)) and os.path.exists(os.path.join(path, "model.safetensors"))


def test_prompt_is_rendered_with_the_models_chat_template(models):
    llava, ved = models
    info = describe(CaptionerSpec.from_config(CaptionConfig(model=llava)))
    assert info.model_type == "llava"
    assert info.prompt_text == "USER: <image>\nDescribe the image concisely, less than 20 words. ASSISTANT:"
    assert describe(CaptionerSpec.from_config(CaptionConfig(model=ved))).prompt_text is None  # prompt-free captioner
    assert prompt_sha256("x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_a_chat_model_without_template_is_a_clear_error(models):
    from veclip.caption.models import load_processor

    processor = load_processor(CaptionerSpec.from_config(CaptionConfig(model=models[0])))
    processor.chat_template = None
    processor.tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        render_prompt(processor, PAPER_PROMPT, "llava", "tiny")


def test_batched_generation_matches_one_by_one(models, cc12m_shard):
    """Left padding is right: each row's caption is the same alone or in a batch of mixed lengths."""
    import tarfile

    with tarfile.open(cc12m_shard) as tar:
        jpgs = [tar.extractfile(m).read() for m in sorted(tar.getmembers(), key=lambda m: m.name)
                if m.name.endswith(".jpg")][:4]
    images = [decode_image(b) for b in jpgs]
    for path in models:
        spec = CaptionerSpec.from_config(CaptionConfig(model=path, max_new_tokens=6))
        info = describe(spec)
        cap = Captioner(spec, "cpu", info.prompt_text)
        batched = cap.caption(images)
        assert batched == [cap.caption([img])[0] for img in images]
        assert all(t.strip() for t in batched)
    spec = CaptionerSpec.from_config(CaptionConfig(model=models[0], max_new_tokens=6))
    loader = CaptionLoader(spec, describe(spec).prompt_text)
    out = caption_images(loader, jpgs[:2] + [b"broken"])
    assert isinstance(out[2], UndecodableImage) and all(isinstance(o, str) and o for o in out[:2])
