"""Load a CLIP model from any source into one encoder interface.

    ref = resolve_model("models:/veclip-clip@candidate")    # or a checkpoint, a folder, a name + weights
    enc = load_encoder(ref, device="cpu")
    enc.encode_images([pil, ...])   # (n, d) L2-normalised float32 on the CPU
    enc.encode_texts(["a dog", ...])

Sources, decided in this order:
- `models:/NAME@ALIAS` / `models:/NAME/VERSION`: a registered MLflow model whose artifact `clip` is an
  open_clip folder (veclip.clip.save) or a Hugging Face CLIPModel folder;
- a training checkpoint file `step_<8 digits>.pt` ({"model": state_dict, "model_name": ...});
- an open_clip folder (open_clip_config.json), as written by veclip.clip.save;
- a Hugging Face `CLIPModel` folder (config.json); its tokenizer loads with AutoTokenizer from the
  same folder, so VeCLIP's released checkpoints (CLIP + a T5 tokenizer) work as they are;
- a folder of training checkpoints (the latest step is taken: veclip.train.checkpoint.latest_checkpoint);
- an open_clip model name (e.g. ViT-B-16) with a weights file.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from veclip.devices import pick_device
from veclip.evaluate import registry
from veclip.evaluate.metrics import normalize
from veclip.evaluate.model_ref import ModelRef, folder_kind
from veclip.train.checkpoint import latest_checkpoint

log = logging.getLogger(__name__)

class Encoder:
    """encode_images(list of PIL) / encode_texts(list of str) -> L2-normalised float32 CPU tensors.

    Images go through `prepare_image` (decode threads may call it) and `encode_pixels`.
    """

    device: str = "cpu"

    def prepare_image(self, image) -> torch.Tensor:
        raise NotImplementedError

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(self, images: list) -> torch.Tensor:
        return self.encode_pixels(torch.stack([self.prepare_image(im) for im in images]))


class OpenClipEncoder(Encoder):
    def __init__(self, model, preprocess, tokenizer, device: str = "cpu"):
        self.model, self.preprocess, self.tokenizer = model.to(device).eval(), preprocess, tokenizer
        self.device = device

    def prepare_image(self, image) -> torch.Tensor:
        return self.preprocess(image)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.encode_image(pixels.to(self.device))).cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return normalize(self.model.encode_text(self.tokenizer(list(texts)).to(self.device))).cpu()


def _features(out) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected feature; older, a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFClipEncoder(Encoder):
    """A Hugging Face CLIPModel with the tokenizer and image processor saved beside it."""

    def __init__(self, model, processor, tokenizer, device: str = "cpu"):
        self.model, self.processor, self.tokenizer = model.to(device).eval(), processor, tokenizer
        self.device = device
        self.max_length = model.config.text_config.max_position_embeddings

    def prepare_image(self, image) -> torch.Tensor:
        return self.processor(images=[image], return_tensors="pt")["pixel_values"][0]

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(_features(self.model.get_image_features(pixel_values=pixels.to(self.device)))).cpu()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        # Padding after the end token cannot change the pooled end-token state (causal attention).
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        feats = self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                             attention_mask=enc["attention_mask"].to(self.device))
        return normalize(_features(feats)).cpu()


def resolve_model(spec: str, weights: Optional[str] = None) -> ModelRef:
    """Decide what kind of source `spec` is (see the module docstring); nothing is loaded yet."""
    if spec.startswith("models:/"):
        return registry.resolve(spec)
    if os.path.exists(spec):
        path = os.path.abspath(spec)
        if os.path.isfile(path):
            return ModelRef(spec, "checkpoint", path)
        kind = folder_kind(path)
        if kind:
            return ModelRef(spec, kind, path)
        latest = latest_checkpoint(path)
        if latest:
            return ModelRef(spec, "checkpoint", str(latest))
        raise ValueError(f"eval.model={spec}: the folder holds no open_clip model (open_clip_config.json), "
                         "no Hugging Face model (config.json) and no step_*.pt checkpoint")
    if weights is None:
        raise ValueError(f"eval.model={spec}: not a path, not a models:/ URI; as an open_clip model name it "
                         "needs eval.weights (a weights file: pretrained weights cannot be downloaded here)")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"eval.weights={weights}: file not found")
    from veclip import clip
    clip.model_config(spec)  # a clear error for an unknown name
    return ModelRef(spec, "name", None, weights)


def _strip_prefixes(state: dict) -> dict:
    """Keys saved from a DDP-wrapped (`module.`) or compiled (`_orig_mod.`) model."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _build(name: str, image_size: Optional[int]):
    """(model, preprocess, tokenizer) of architecture `name`, at the image size it was trained at
    (the trainer records a non-native size as `image_size`; open_clip resizes the position table)."""
    import open_clip
    from veclip import clip

    clip.model_config(name)  # registers veclip's configs; a clear error for an unknown name
    model, _, preprocess = open_clip.create_model_and_transforms(name, force_image_size=image_size)
    return model, preprocess, open_clip.get_tokenizer(name)


def load_checkpoint(path: str, device: str) -> OpenClipEncoder:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem gets the file named
        raise ValueError(f"checkpoint {path} could not be read as a tensors-only torch file: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_name" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} lacks 'model' or 'model_name' (found {keys}); expected "
                         "torch.save({'model': state_dict, 'model_name': ..., 'step': ...})")
    model, preprocess, tokenizer = _build(ckpt["model_name"], ckpt.get("image_size"))
    missing, unexpected = model.load_state_dict(_strip_prefixes(ckpt["model"]), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit model '{ckpt['model_name']}': "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("loaded checkpoint %s (%s, step %s, image size %s)", path, ckpt["model_name"], ckpt.get("step"),
             ckpt.get("image_size") or "native")
    return OpenClipEncoder(model, preprocess, tokenizer, device)


def load_hf(path: str, device: str) -> HFClipEncoder:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        processor = CLIPImageProcessor.from_pretrained(path)
    else:
        side = model.config.vision_config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        log.warning("%s has no preprocessor_config.json: using CLIP's default preprocessing at %d px", path, side)
    eos = model.config.text_config.eos_token_id
    if tokenizer.eos_token_id is not None and eos != tokenizer.eos_token_id:
        log.warning("%s: text_config.eos_token_id=%s but the tokenizer's end token is %s: text features pool "
                    "at the wrong position", path, eos, tokenizer.eos_token_id)
    return HFClipEncoder(model, processor, tokenizer, device)


def load_encoder(ref: ModelRef, device: str = "auto") -> Encoder:
    """Build the encoder for a resolved source, on `device` (`auto`: the first GPU, else CPU)."""
    from veclip import clip

    device = pick_device(device)
    if ref.kind == "checkpoint":
        return load_checkpoint(ref.path, device)
    if ref.kind == "open_clip":
        model, preprocess, tokenizer = clip.load(ref.path)
        return OpenClipEncoder(model, preprocess, tokenizer, device)
    if ref.kind == "hf":
        return load_hf(ref.path, device)
    if ref.kind == "name":
        model, _, preprocess, tokenizer = clip.create(ref.spec, pretrained=ref.weights)
        return OpenClipEncoder(model, preprocess, tokenizer, device)
    raise ValueError(f"cannot load a model of kind '{ref.kind}' ({ref.spec})")
