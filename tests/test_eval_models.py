"""Every local model source loads into the same encoder: open_clip folder, training checkpoint (file and
folder), open_clip name + weights, and a Hugging Face CLIPModel with a T5 tokenizer (VeCLIP's release
format). Bad images are left out and counted, never fatal."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from veclip import clip
from veclip.evaluate.datasets import load_coco
from veclip.evaluate.embed import embed_images
from veclip.evaluate.metrics import normalize
from veclip.evaluate.models import load_encoder, resolve_model
from veclip.evaluate.retrieval import evaluate_retrieval

TEXTS = ["A dog sitting on a couch.", "two people riding horses on a beach", "a plate of food"]


def save_tiny(folder, seed: int):
    """A fixed random veclip-tiny model in open_clip's folder format; returns the model."""
    torch.manual_seed(seed)
    model, _, _, _ = clip.create("veclip-tiny")
    clip.save(model, "veclip-tiny", folder)
    return model


def save_checkpoint(path, model, step: int, ddp: bool = False):
    """A training checkpoint by the contract: one torch.save'd dict, rebuilt with clip.create(model_name)."""
    state = {("module." if ddp else "") + k: v for k, v in model.state_dict().items()}
    torch.save({"model": state, "model_name": "veclip-tiny", "optimizer": {"state": {}, "param_groups": []},
                "step": step, "epoch": 0, "config": {"model": "veclip-tiny", "lr": 5e-4}}, path)


def save_tiny_hf(folder):
    """A tiny Hugging Face CLIPModel with a T5 tokenizer built offline (Unigram vocabulary) beside it."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, T5Tokenizer

    words = "a an the of on in with dog cat people riding horses beach plate food sitting couch two".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -4.0) for w in words] + [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyzAT.,"]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="module")
def images():
    folder = shared_path("coco-mini", "images")
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))[:3]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    model = save_tiny(root / "oc", seed=0)
    (root / "ckpt").mkdir()
    save_checkpoint(root / "ckpt" / "step_00000010.pt", model, 10, ddp=True)
    save_checkpoint(root / "ckpt" / "step_00000005.pt", save_tiny(root / "other", seed=1), 5)
    return root


def embeddings(spec, images, weights=None):
    enc = load_encoder(resolve_model(str(spec), weights), "cpu")
    return enc.encode_images(images), enc.encode_texts(TEXTS)


def test_every_open_clip_source_gives_the_same_embeddings(sources, images):
    ref_img, ref_txt = embeddings(sources / "oc", images)
    assert ref_img.shape == (3, 128) and ref_txt.shape == (3, 128)
    assert torch.allclose(ref_img.norm(dim=1), torch.ones(3)) and torch.allclose(ref_txt.norm(dim=1), torch.ones(3))
    for spec, weights in [(sources / "ckpt" / "step_00000010.pt", None),   # DDP-prefixed keys
                          (sources / "ckpt", None),                         # latest step of the folder
                          ("veclip-tiny", str(sources / "oc" / "open_clip_model.safetensors"))]:
        img, txt = embeddings(spec, images, weights)
        assert torch.allclose(img, ref_img, atol=1e-6) and torch.allclose(txt, ref_txt, atol=1e-6), spec
    older, _ = embeddings(sources / "ckpt" / "step_00000005.pt", images)
    assert not torch.allclose(older, ref_img, atol=1e-3)
    assert resolve_model(str(sources / "ckpt")).path.endswith("step_00000010.pt")


def test_checkpoint_trained_at_another_image_size(tmp_path, images):
    import open_clip

    clip.register_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("veclip-tiny", force_image_size=32)
    state = {"model": model.state_dict(), "model_name": "veclip-tiny", "image_size": 32, "step": 3,
             "rng": torch.get_rng_state(), "gold": {"table": "/x/gold", "version": 2}}
    torch.save(state, tmp_path / "step_00000003.pt")
    enc = load_encoder(resolve_model(str(tmp_path)), "cpu")
    assert enc.prepare_image(images[0]).shape == (3, 32, 32)
    with torch.inference_mode():
        direct = normalize(model.eval().encode_image(enc.prepare_image(images[0])[None]))
    assert torch.allclose(enc.encode_images(images[:1]), direct, atol=1e-6)


def test_hugging_face_clip_with_t5_tokenizer(tmp_path, images):
    save_tiny_hf(tmp_path / "hf")
    ref = resolve_model(str(tmp_path / "hf"))
    enc = load_encoder(ref, "cpu")
    assert ref.kind == "hf" and type(enc.tokenizer).__name__ == "T5Tokenizer"
    img = enc.encode_images(images)
    assert img.shape == (3, 16) and torch.allclose(img.norm(dim=1), torch.ones(3))
    together = enc.encode_texts(TEXTS)
    alone = torch.cat([enc.encode_texts([t]) for t in TEXTS])
    # Padding a short caption to the longest one in its batch must not change its embedding.
    assert torch.allclose(together, alone, atol=1e-5)
    assert (together @ together.T).triu(1).max() < 0.9999
    assert torch.equal(enc.encode_images(images), img)


def test_bad_model_sources_are_clear_errors(sources, tmp_path):
    with pytest.raises(ValueError, match="needs eval.weights"):
        resolve_model("ViT-B-16")
    with pytest.raises(ValueError, match="unknown CLIP model 'nope'"):
        resolve_model("nope", weights=str(sources / "oc" / "open_clip_model.safetensors"))
    with pytest.raises(ValueError, match="no open_clip model .* no step_\\*.pt checkpoint"):
        resolve_model(str(tmp_path))
    torch.save({"weights": {}}, tmp_path / "step_00000001.pt")
    with pytest.raises(ValueError, match="lacks 'model' or 'model_name'"):
        load_encoder(resolve_model(str(tmp_path / "step_00000001.pt")), "cpu")


def test_unreadable_images_are_left_out_and_counted(sources, tmp_path):
    coco = shared_path("coco-mini", "captions.json")
    data = load_coco("coco-mini", str(coco)).subset(np.arange(12))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    data.images[3] = str(tmp_path / "broken.jpg")
    data.images[7] = str(tmp_path / "missing.jpg")
    enc = load_encoder(resolve_model(str(sources / "oc")), "cpu")
    emb, ok, failures = embed_images(enc, [data.images[:5], data.images[5:]], 12, "t")
    assert emb.shape == (10, 128) and ok.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    assert [i for i, _ in failures] == [3, 7] and "No such file" in failures[1][1]
    result = evaluate_retrieval(enc, data, batch_size=4)
    c = result["counts"]
    assert (c["images_unreadable"], c["images_evaluated"], c["captions_evaluated"]) == (2, 10, 50)
    assert c["captions_of_unreadable_images"] == 10
    assert [f["image"] for f in result["failures"]] == [data.images[3], data.images[7]]
    assert set(result["metrics"]) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
