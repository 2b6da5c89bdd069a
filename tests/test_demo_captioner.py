"""The demo's real data sources, its pixel-measured ground-truth captions, and the small real captioner
(a very short training run saved in Hugging Face format and loaded by the caption stage's own loader).

Needs Fashion-MNIST (`apt-get install dataset-fashion-mnist`); the CIFAR-10 checks need
../shared/data/cifar10. Each skips with a clear message when its data is absent."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from veclip.demo import captioner as dc
from veclip.demo import sources
from veclip.demo.describe import attributes, attributes_batch, describe, describe_batch


def need(dataset: str) -> None:
    if not sources.available(dataset):
        fix = ("apt-get install dataset-fashion-mnist" if dataset == "fashion-mnist"
               else "put CIFAR-10 under ../shared/data/cifar10 or set VECLIP_SHARED_DATA")
        pytest.skip(f"demo dataset {dataset} not found on this machine ({fix})")


# ------------------------------------------------------------------------------------------ sources

def test_part_indices_are_disjoint_and_cover_the_split():
    cap, crawl = sources._part_indices(1001, "captioner"), sources._part_indices(1001, "crawl")
    assert set(cap).isdisjoint(crawl) and set(cap) | set(crawl) == set(range(1001))
    assert all(i % 2 == 0 for i in cap) and all(i % 2 == 1 for i in crawl)
    assert np.array_equal(cap, sources._part_indices(1001, "captioner"))  # a fixed order
    assert sorted(sources._part_indices(10, "test")) == list(range(10))
    with pytest.raises(ValueError, match="unknown part"):
        sources._part_indices(10, "validation")


def test_fashion_mnist_parts_are_disjoint_and_shaped_right():
    need("fashion-mnist")
    parts = {p: sources.load("fashion-mnist", p) for p in sources.PARTS}
    assert [len(parts[p]) for p in sources.PARTS] == [30000, 30000, 10000]
    keys = [set(parts[p].keys) for p in sources.PARTS]
    assert keys[0].isdisjoint(keys[1]) and all(k.startswith("fmnist-test-") for k in keys[2])
    s = sources.load("fashion-mnist", "captioner", limit=50)
    assert s.images.shape == (50, 28, 28, 3) and s.images.dtype == np.uint8
    assert (s.images[..., 0] == s.images[..., 2]).all()  # grey copied to 3 channels
    assert s.keys == parts["captioner"].keys[:50] and s.keys[0].startswith("fmnist-train-")
    assert s.class_names[0] == "t-shirt" and s.class_names[9] == "ankle boot"
    assert len(set(s.labels.tolist())) >= 8  # a class-mixed first 50


def test_cifar10_parts_are_disjoint_and_shaped_right():
    need("cifar10")
    cap, crawl, test = (sources.load("cifar10", p, limit=200) for p in sources.PARTS)
    assert cap.images.shape == (200, 32, 32, 3) and cap.images.dtype == np.uint8
    assert set(cap.keys).isdisjoint(crawl.keys) and all(k.startswith("cifar10-test-") for k in test.keys)
    assert all(int(k[-6:]) % 2 == 0 for k in cap.keys) and all(int(k[-6:]) % 2 == 1 for k in crawl.keys)
    assert len(set(cap.labels.tolist())) == 10 and cap.class_names[8] == "ship"


def test_missing_datasets_say_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.setenv("VECLIP_FASHION_MNIST", str(tmp_path / "nothing"))
    monkeypatch.setenv("VECLIP_SHARED_DATA", str(tmp_path / "nothing"))
    assert not sources.available("fashion-mnist") and not sources.available("cifar10")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        sources.load("fashion-mnist", "test")
    with pytest.raises(FileNotFoundError, match="cifar10"):
        sources.load("cifar10", "test")
    with pytest.raises(ValueError, match="unknown demo dataset"):
        sources.load("mnist", "test")


# ------------------------------------------------------------------------------------------ describe

def square(size: int, colour, background=(0, 0, 0), frame: int = 32) -> np.ndarray:
    img = np.empty((frame, frame, 3), np.uint8)
    img[:] = background
    lo = (frame - size) // 2
    img[lo:lo + size, lo:lo + size] = colour
    return img


@pytest.mark.parametrize("colour,name", [((220, 30, 30), "red"), ((30, 60, 220), "blue"), ((40, 180, 60), "green"),
                                         ((240, 220, 40), "yellow"), ((250, 140, 20), "orange"),
                                         ((120, 70, 30), "brown"), ((250, 250, 250), "white")])
def test_colour_of_a_square_on_black_is_measured(colour, name):
    a = attributes(square(16, colour))
    assert a["colour"] == name and a["background"] == "black" and a["grey"] == (name == "white")


def test_size_in_frame_and_background_are_measured():
    assert attributes(square(8, (220, 30, 30)))["size"] == "small"
    assert attributes(square(28, (220, 30, 30)))["size"] == "large"   # photos: > 75% of the frame
    assert attributes(square(24, (220, 30, 30)))["size"] == "medium"
    assert attributes(square(26, (90, 90, 90)))["size"] == "large"    # grey product shots: > 55%
    a = attributes(square(8, (250, 250, 250), background=(30, 60, 200)))
    assert (a["colour"], a["background"], a["size"]) == ("white", "blue", "small")


def test_grey_images_get_a_tone_and_brightness_is_measured():
    light = attributes(np.asarray(square(18, 210), np.uint8)[..., 0])  # H x W grey is accepted
    dark = attributes(square(18, (70, 70, 70)))
    assert light["grey"] and light["colour"] == "white" and light["tone"] == "light"
    assert dark["colour"] == "dark grey" and dark["tone"] == "dark"
    assert attributes(np.full((32, 32, 3), 240, np.uint8))["brightness"] == "bright"
    assert attributes(np.full((32, 32, 3), 20, np.uint8))["brightness"] == "dark"
    batch = np.stack([square(8, (220, 30, 30)), square(26, (30, 60, 220), (240, 240, 240))])
    assert attributes_batch(batch) == [attributes(im) for im in batch]


def test_describe_is_deterministic_short_and_grammatical():
    a = attributes(square(26, (70, 70, 70)))
    assert describe("ankle boot", a) == "a dark grey ankle boot filling the frame on a black background"
    ship = attributes(square(8, (250, 250, 250), background=(30, 60, 200)))
    assert describe("ship", ship) == "a dark photo of a small white ship on a blue background"
    orange = attributes(square(24, (250, 140, 20), background=(128, 128, 128)))
    assert describe("airplane", orange) == "an orange airplane on a grey background"
    imgs = np.stack([square(s, c, b) for s in (8, 20, 26) for c in ((220, 30, 30), (90, 90, 90))
                     for b in ((0, 0, 0), (255, 255, 255))])
    caps = describe_batch(["egg"] * len(imgs), imgs)
    assert caps == describe_batch(["egg"] * len(imgs), imgs.copy())
    pattern = dc.caption_pattern(["egg"])
    for c in caps:
        assert c == c.lower() and len(c.split()) < 20 and " a egg" not in c and dc.parse_caption(c, pattern)


def test_real_captions_follow_the_grammar_the_evaluation_reads():
    need("fashion-mnist")
    s = sources.load("fashion-mnist", "test", limit=300)
    caps = describe_batch(s.label_names(), s.images)
    pattern = dc.caption_pattern(s.class_names)
    parsed = [dc.parse_caption(c, pattern) for c in caps]
    assert all(parsed) and [p["class"] for p in parsed] == s.label_names()
    assert len({p["size"] for p in parsed}) == 3 and len({p["colour"] for p in parsed}) >= 3
    report = dc.evaluate(caps, caps, ["fashion-mnist"] * len(caps), {"fashion-mnist": s.class_names})
    assert report["all"]["exact_match"] == 1.0 and report["all"]["class_accuracy"] == 1.0


# ------------------------------------------------------------------------------------------ captioner

TINY = dict(steps=25, batch_size=16, warmup=5, lr=3e-3, train_limit=256, eval_limit=16, datasets=("fashion-mnist",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    need("fashion-mnist")
    return dc.ensure_captioner(tmp_path_factory.mktemp("demo") / "captioner", **TINY)


def test_trained_folder_has_the_layout_of_a_hub_captioner(trained, tmp_path):
    from veclip.caption.tiny import MARKER, build_tiny_llava

    reference = set(os.listdir(build_tiny_llava(str(tmp_path / "ref")))) - {MARKER}
    ours = set(os.listdir(trained))
    assert reference <= ours and MARKER not in ours and {"eval.json", "training.json"} <= ours
    training = json.loads((trained / "training.json").read_text())
    assert training["version"] == dc.VERSION and training["steps"] == 25
    assert training["train_images"] == {"fashion-mnist": 256}
    # <s> USER: <image> x (one per patch, CLS too under "full") Describe ... words. ASSISTANT:
    assert training["prompt_tokens"] == 2 + dc.image_tokens(dc.Settings(**TINY)) + len(dc.PAPER_PROMPT.split()) + 1
    metrics = json.loads((trained / "eval.json").read_text())["metrics"]
    assert metrics["fashion-mnist"]["n"] == 16 and 0.0 <= metrics["all"]["token_f1"] <= 1.0


def test_saved_folder_is_a_llava_in_the_hub_weight_layout(trained):
    """A LlavaForConditionalGeneration (CLIP vision tower + projector + Llama with head_dim 64, the head size
    vLLM's CPU attention needs) whose safetensors use the hub / vLLM layout, read back by transformers whole."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, LlavaForConditionalGeneration

    config = AutoConfig.from_pretrained(trained)
    assert config.model_type == "llava" and config.architectures == ["LlavaForConditionalGeneration"]
    assert config.vision_config.model_type == "clip_vision_model" and config.text_config.model_type == "llama"
    text = config.text_config
    assert text.head_dim == 64 and text.tie_word_embeddings
    assert text.max_position_embeddings >= 512  # vLLM is asked for max_model_len=512

    weights = load_file(trained / "model.safetensors")
    prefixes = ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.")
    assert all(k.startswith(prefixes) for k in weights), sorted(k for k in weights if not k.startswith(prefixes))
    assert any(k.startswith("vision_tower.vision_model.embeddings.") for k in weights)
    assert "language_model.lm_head.weight" not in weights  # tied to the input embeddings

    model, info = LlavaForConditionalGeneration.from_pretrained(trained, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = model.state_dict()
    assert torch.equal(state["model.vision_tower.embeddings.patch_embedding.weight"],
                       weights["vision_tower.vision_model.embeddings.patch_embedding.weight"])
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def test_caption_stage_loads_it_and_captions_real_images(trained):
    """The caption stage's own path: describe(spec) -> chat prompt -> CaptionLoader -> batched generate."""
    from PIL import Image

    from veclip.caption.models import Captioner, CaptionerSpec, describe as describe_model
    from veclip.caption.predict import CaptionLoader, caption_images
    from veclip.config.caption import CaptionConfig

    spec = CaptionerSpec.from_config(CaptionConfig(model=str(trained), max_new_tokens=30))
    info = describe_model(spec)
    assert info.model_type == "llava"
    assert info.prompt_text.count("<image>") == 1 and dc.PAPER_PROMPT in info.prompt_text
    assert info.prompt_text.startswith("<s>") and info.prompt_text.endswith("ASSISTANT:")

    captioner = Captioner(spec, "cpu", info.prompt_text)
    s = sources.load("fashion-mnist", "test", limit=4)
    inputs = captioner.build_inputs([Image.fromarray(im) for im in s.images])
    ids = inputs["input_ids"]
    # exactly the prompt the captioner was trained on: one <image> per image token, no <unk>, no second BOS
    settings = dc.Settings(**TINY)
    assert ids.tolist() == [dc.prompt_ids(dc.build_processor(settings, captioner.tokenizer)).tolist()] * 4
    assert (ids == captioner.model.config.image_token_index).sum(1).tolist() == [dc.image_tokens(settings)] * 4
    assert captioner.tokenizer.unk_token_id not in ids[0].tolist() and ids[0].tolist().count(captioner.tokenizer.bos_token_id) == 1
    texts = captioner.caption([Image.fromarray(im) for im in s.images])
    pattern = dc.caption_pattern(s.class_names)
    assert all(t.strip() and "<" not in t and "USER" not in t and "ASSISTANT" not in t for t in texts), texts

    jpegs = []
    for im in s.images:
        buf = io.BytesIO()
        Image.fromarray(im).resize((64, 64)).save(buf, format="JPEG")
        jpegs.append(buf.getvalue())
    out = caption_images(CaptionLoader(spec, info.prompt_text), jpegs + [b"not an image"])
    assert isinstance(out[-1], Exception)
    assert all(isinstance(t, str) and t and t == t.lower() and "<" not in t for t in out[:-1]), out
    # 25 steps on 256 images already write describe()'s grammar for most images
    assert sum(dc.parse_caption(t, pattern) is not None for t in texts + out[:-1]) >= 4, texts + out[:-1]


def test_training_inputs_mask_the_prompt_and_image_tokens():
    """The loss is on the caption tokens (+ EOS) only: labels are -100 on the prompt (image tokens included)
    and on the right padding."""
    import torch

    tok = dc.build_tokenizer(["a white bag on a black background", "a dark grey sandal on a black background"])
    settings = dc.Settings()
    processor = dc.build_processor(settings, tok)
    prompt = dc.prompt_ids(processor)
    words = tok.convert_ids_to_tokens(prompt.tolist())
    n_image = dc.image_tokens(settings)
    assert n_image == (settings.image_size // settings.patch_size) ** 2 + (settings.feature_strategy == "full")
    assert words[:2] == ["<s>", "USER:"] and words.count("<image>") == n_image and words[-1] == "ASSISTANT:"
    # the prompt's words are in the vocabulary
    assert "<unk>" not in words and " ".join(words[2 + n_image:-1]) == dc.PAPER_PROMPT
    labels = dc.encode_labels(tok, ["a white bag on a black background", "a white bag"])
    input_ids, lab = dc.batch_inputs(prompt, labels, tok.pad_token_id)
    n = len(prompt)
    assert input_ids.shape == lab.shape == (2, n + 8) and torch.equal(input_ids[:, :n], prompt.expand(2, -1))
    assert (lab[:, :n] == -100).all()
    assert tok.decode(lab[0, n:].tolist()) == "a white bag on a black background </s>"
    assert lab[1, n:].tolist()[:4] == tok("a white bag", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (lab[1, n + 4:] == -100).all() and (input_ids[1, n + 4:] == tok.pad_token_id).all()


def test_a_finished_folder_is_reused_and_other_settings_retrain(trained, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("a finished captioner with the same settings must be reused")

    monkeypatch.setattr(dc, "train", no_training)
    assert dc.ensure_captioner(trained, **TINY) == trained
    assert dc.is_finished(trained, dc.Settings(**TINY))
    assert not dc.is_finished(trained, dc.Settings(**{**TINY, "steps": 26}))
    assert not dc.is_finished(trained.parent / "elsewhere", dc.Settings(**TINY))
    monkeypatch.setenv("VECLIP_FASHION_MNIST", str(trained.parent / "nothing"))  # data now absent: not the same
    assert not dc.is_finished(trained, dc.Settings(**TINY))


def test_lr_schedule_warms_up_then_decays():
    s = dc.Settings(steps=100, warmup=10, lr=1.0)
    lrs = [dc.lr_at(i, s) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] >= 0.1


def test_fast_training_preprocessing_equals_the_image_processor():
    """Training feeds the processor stacked tensors; the caption stage (and vLLM) feed it PIL images."""
    from PIL import Image

    tok = dc.build_tokenizer(["a red egg"])
    processor = dc.build_processor(dc.Settings(), tok)
    images = [square(12, (220, 30, 30), frame=28), square(20, (30, 60, 220), (200, 200, 200)),
              np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)]
    reference = processor.image_processor(images=[Image.fromarray(im) for im in images],
                                          return_tensors="pt")["pixel_values"]
    assert reference.shape == (3, 3, 32, 32)
    assert (dc.pixel_values(processor, images) - reference).abs().max() < 1e-5


def test_training_is_deterministic_given_the_seed(tmp_path):
    need("fashion-mnist")
    from safetensors.numpy import load_file

    tiny = dc.Settings(steps=3, batch_size=8, warmup=1, train_limit=32, eval_limit=4, datasets=("fashion-mnist",))
    a, b = dc.train(tmp_path / "a", tiny), dc.train(tmp_path / "b", tiny)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_an_absent_dataset_is_skipped_with_a_message(monkeypatch, tmp_path, capsys):
    need("fashion-mnist")
    monkeypatch.setenv("VECLIP_SHARED_DATA", str(tmp_path / "nothing"))
    assert dc.usable_datasets(("fashion-mnist", "cifar10")) == ["fashion-mnist"]
    assert "cifar10 is not available here" in capsys.readouterr().err
    monkeypatch.setenv("VECLIP_FASHION_MNIST", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dc.usable_datasets(("fashion-mnist", "cifar10"))
