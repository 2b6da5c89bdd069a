"""Tiny random-weight captioners saved to disk, for tests, the demo and benchmarks.

    build_tiny_llava("/tmp/tiny-llava")                    # LLaVA: CLIP vision tower + Llama + chat template
    build_tiny_llava("/tmp/small-llava", size="small")     # a larger random LLaVA (benchmarks)
    build_tiny_llava("/tmp/vllm-llava", size="vllm")       # tiny, and runnable by vLLM's CPU backend too
    build_tiny_vision_encoder_decoder("/tmp/tiny-ved")     # ViT encoder + GPT-2 decoder, no prompt

    python -m veclip.caption.tiny llava /tmp/tiny-llava [--size small]
    python -m veclip.caption.tiny ved /tmp/tiny-ved

THESE MODELS HAVE RANDOM WEIGHTS: THEIR CAPTIONS ARE MEANINGLESS WORD SALAD. They exist so that
the real code path runs end to end without a model hub (`from_pretrained(path)` -> processor ->
chat template -> batched `generate`). For real captions point `caption.model` at a real VLM
(e.g. `llava-hf/llava-1.5-7b-hf`).

The tokenizer is a word-level `tokenizers` model built from the small vocabulary below, wrapped
as a `PreTrainedTokenizerFast` with BOS/EOS/PAD, the `<image>` token and a LLaVA-1.5 chat template.
Weights are seeded, so the same builder call makes the same model. LLaVA weights are saved in the
hub layout (`vision_tower.vision_model.*`, as llava-hf checkpoints have it), which both transformers
and vLLM read; transformers 5 itself would write `vision_tower.*`, which vLLM does not map.
Each model folder also gets a `VECLIP_RANDOM_WEIGHTS` marker file, so reports and the gallery can
warn that captions are noise.
"""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
WORDS = (
    "USER ASSISTANT : . , a an the of in on at with and to is are near under over by from two three "
    "describe image concisely less than 20 words photo picture view close up man woman child people dog "
    "cat bird horse car bus bike boat train plane tree trees flower flowers grass field road street city "
    "building house room table chair bed window door wall sky cloud clouds water river lake sea beach "
    "mountain snow sun night light red blue green yellow white black brown small large old young "
    "standing sitting walking running playing holding wearing looking food plate cup shirt hat sign "
    "logo text book phone computer screen background front side top bottom group couple family "
    "wedding party street-side sunset garden park"
).split()

# LLaVA-1.5's conversation format: "USER: <image>\n{prompt} ASSISTANT:".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# (vision hidden, vision layers, image size, patch, text hidden, text layers, heads)
MARKER = "VECLIP_RANDOM_WEIGHTS"

SIZES = {
    "tiny": dict(v_hidden=32, v_layers=2, image=32, patch=8, t_hidden=64, t_layers=2, heads=4),
    "small": dict(v_hidden=192, v_layers=4, image=112, patch=14, t_hidden=384, t_layers=6, heads=6),
    # Runs in vLLM on CPU too: its CPU attention needs a head_dim of 64 (128 / 2 heads), not 16.
    "vllm": dict(v_hidden=32, v_layers=2, image=32, patch=8, t_hidden=128, t_layers=2, heads=2),
}


def _mark(path: str, what: str) -> None:
    with open(os.path.join(path, MARKER), "w") as f:
        f.write(f"{what} with RANDOM weights built by veclip.caption.tiny: its captions are meaningless.\n")


def build_tokenizer():
    """A word-level fast tokenizer over SPECIALS + WORDS that adds BOS, with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=["<image>"],
                                   padding_side="left", model_max_length=512)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _no_special_generation(model, tokenizer) -> None:
    """Random weights would often emit EOS or specials at once; force a few real words instead."""
    gen = model.generation_config
    gen.min_new_tokens = 3
    gen.suppress_tokens = [tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "<unk>", "<image>")]
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                            tokenizer.pad_token_id)


def build_tiny_llava(path: str, size: str = "tiny", seed: int = 0) -> str:
    """Save a random-weight LLaVA (CLIP vision tower + Llama) with its processor under `path`."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    s = SIZES[size]
    tokenizer = build_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=s["v_hidden"], intermediate_size=2 * s["v_hidden"],
                              num_hidden_layers=s["v_layers"], num_attention_heads=s["heads"] // 2 or 1,
                              image_size=s["image"], patch_size=s["patch"], projection_dim=s["v_hidden"])
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s["t_hidden"], intermediate_size=2 * s["t_hidden"],
                       num_hidden_layers=s["t_layers"], num_attention_heads=s["heads"], num_key_value_heads=2,
                       max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    _no_special_generation(model, tokenizer)
    image_processor = CLIPImageProcessor(size={"shortest_edge": s["image"]},
                                         crop_size={"height": s["image"], "width": s["image"]})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=s["patch"],
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               image_token="<image>", num_additional_image_tokens=1)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    hub_vision_layout(path)
    processor.save_pretrained(path)
    _mark(path, f"LLaVA ({size})")
    log.info("saved random-weight LLaVA (%s) to %s", size, path)
    return path


def _hub_key(key: str) -> str:
    if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
        return "vision_tower.vision_model." + key[len("vision_tower."):]
    return key


def hub_vision_layout(path: str) -> None:
    """Rename a saved LLaVA's `vision_tower.X` weights to the hub's `vision_tower.vision_model.X`."""
    import json

    from safetensors.torch import load_file, save_file

    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            file = os.path.join(path, name)
            tensors = load_file(file)
            if any(_hub_key(k) != k for k in tensors):
                save_file({_hub_key(k): v for k, v in tensors.items()}, file, metadata={"format": "pt"})
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):  # sharded: the index names the same keys
        with open(index) as f:
            data = json.load(f)
        data["weight_map"] = {_hub_key(k): v for k, v in data["weight_map"].items()}
        with open(index, "w") as f:
            json.dump(data, f, indent=2)


def build_tiny_vision_encoder_decoder(path: str, seed: int = 0) -> str:
    """Save a random-weight VisionEncoderDecoder (ViT + GPT-2 decoder) captioner under `path` (no prompt)."""
    import torch
    from transformers import GPT2Config, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    tokenizer = build_tokenizer()
    tokenizer.chat_template = None  # a plain captioner: images in, text out
    encoder = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=32, patch_size=8)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config).eval()
    _no_special_generation(model, tokenizer)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    tokenizer.save_pretrained(path)
    _mark(path, "VisionEncoderDecoder")
    log.info("saved random-weight VisionEncoderDecoder to %s", path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Build a tiny random-weight captioner (meaningless captions).")
    p.add_argument("family", choices=["llava", "ved"], help="llava (chat VLM) or ved (VisionEncoderDecoder)")
    p.add_argument("path", help="output folder")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="LLaVA size (tiny, small)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if a.family == "llava":
        build_tiny_llava(a.path, size=a.size)
    else:
        build_tiny_vision_encoder_decoder(a.path)
    print(a.path)


if __name__ == "__main__":
    main()
