"""A small real image captioner for the offline demo, trained here on Fashion-MNIST and CIFAR-10.

    python -m veclip.demo.captioner ./work/models/demo-captioner            # train (~8 CPU-minutes on one core) or reuse
    python -m veclip.demo.captioner OUT --steps 200 --datasets fashion-mnist --force

    from veclip.demo.captioner import ensure_captioner
    path = ensure_captioner("./work/models/demo-captioner")   # then --set caption.model=<path>

No pretrained vision-language model installs offline, so the demo trains its own, of the LLaVA family
the paper captions with: a transformers `LlavaForConditionalGeneration` made of a small CLIP vision
tower (32 x 32 pixels, patch 8: 16 patch tokens, the CLS position dropped by the "default" feature
strategy), LLaVA's two-layer MLP projector and a small Llama language model with tied embeddings,
plus a word-level tokenizer trained with `tokenizers` on the ground-truth captions (and the prompt's
words; specials <pad> <s> </s> <unk> <image>), a `CLIPImageProcessor` and LLaVA-1.5's chat template
("<s>USER: <image>\n{prompt} ASSISTANT:"; the template writes BOS, the tokenizer adds nothing). It is
trained as a chat VLM: the input is the rendered chat prompt of the paper's instruction
(veclip.config.caption.PAPER_PROMPT, exactly what the caption stage feeds, <image> expanded by the
processor) followed by the caption, and the loss is on the caption tokens and EOS only (labels -100 on
the prompt and image positions). The targets are veclip.demo.describe's captions (class name +
colour/tone, size in frame, background, brightness measured from the pixels) of the "captioner" part of
each dataset (veclip.demo.sources); CIFAR-10 is skipped, with a message, where ../shared/data/cifar10 is
absent.

Two choices make the same folder run in vLLM (caption.engine=vllm) as well as in transformers:
- the language model's head_dim is 64 (hidden 128 = 2 heads of 64): vLLM's CPU attention refuses small
  head sizes such as 16 ("Unsupported CPU attention configuration");
- the weights are stored in the hub's LLaVA layout (as llava-hf/llava-1.5-7b-hf): `vision_tower.
  vision_model.*`, `multi_modal_projector.*`, `language_model.model.*`. transformers 5 saves the
  vision tower as `vision_tower.*` (no inner `vision_model`), which vLLM cannot map, so `to_hub_layout`
  renames the keys after save_pretrained; transformers renames the hub layout back on load.

The folder has the layout of any Hugging Face LLaVA (model.safetensors, config.json,
generation_config.json, processor_config.json, chat_template.jinja, tokenizer files), so the caption
stage loads it exactly as it loads a hub model. Beside them: `training.json` (settings, version,
steps, seconds, load average, data sizes) and `eval.json` (held-out accuracy on the "test" part: class
word, each attribute, exact match, token F1). A folder whose training.json matches the requested settings
is reused in a second; training is deterministic given the seed (on one machine and torch build).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from veclip.caption.prompt import render_prompt
from veclip.config.caption import PAPER_PROMPT
from veclip.caption.tiny import CHAT_TEMPLATE as LLAVA_CHAT_TEMPLATE
from veclip.demo import describe as desc
from veclip.demo import sources

VERSION = f"demo-captioner-2+{desc.VERSION}"
IMAGE_TOKEN = "<image>"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]
MAX_CAPTION_TOKENS = 24
MAX_POSITIONS = 512   # RoPE: free; vLLM refuses a max_model_len above it (the caption stage asks for 512)
HEAD_DIM = 64         # vLLM 0.32 CPU attention: head sizes 32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512 only
# LLaVA-1.5's conversation format, BOS written by the template: "<s>USER: <image>\n{prompt} ASSISTANT:".
CHAT_TEMPLATE = "<s>" + LLAVA_CHAT_TEMPLATE
PROMPT_WORDS = f"USER: ASSISTANT: {PAPER_PROMPT}"   # the chat prompt's words, in the tokenizer beside the captions'
# transformers 5 key prefixes -> the hub (and vLLM) LLaVA layout; the first match wins
LAYOUT = (("model.vision_tower.", "vision_tower.vision_model."), ("vision_tower.", "vision_tower.vision_model."),
          ("model.multi_modal_projector.", "multi_modal_projector."),
          ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."))


@dataclass(frozen=True)
class Settings:
    """Everything that decides the trained weights (a cached folder is reused only for equal settings)."""

    steps: int = 2000                 # optimizer steps
    batch_size: int = 64
    lr: float = 2e-3                  # peak AdamW learning rate (linear warmup, cosine decay to 10%)
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    datasets: tuple[str, ...] = sources.DATASETS
    image_size: int = 32
    patch_size: int = 8               # 4 x 4 = 16 image tokens (patch 4: 64 tokens, measured no better here)
    vision_hidden: int = 128          # CLIP vision tower
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 256             # CLIP MLP width
    text_hidden: int = 128            # Llama width
    text_heads: int = 2               # attention heads of head_dim 64 each (text_heads * 64 need not be text_hidden)
    text_layers: int = 2
    text_mlp: int = 256               # Llama (SwiGLU) MLP width
    feature_strategy: str = "default"  # LLaVA's vision_feature_select_strategy: "default" drops CLIP's CLS, "full" keeps it
    train_limit: Optional[int] = None  # images per dataset from the "captioner" part (None: all)
    eval_limit: int = 1000             # held-out images per dataset from the "test" part
    version: str = VERSION

    def to_json(self) -> dict:
        d = asdict(self)
        d["datasets"] = list(self.datasets)
        return d


# ----------------------------------------------------------------------------------------------- data

@dataclass
class Data:
    """Images (uint8 N x H x W x 3, possibly of two sizes), ground-truth captions, per-row dataset."""

    images: list[np.ndarray] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)


def usable_datasets(datasets) -> list[str]:
    """The requested datasets present on this machine; the absent ones are skipped with a message."""
    out = []
    for name in datasets:
        if sources.available(name):
            out.append(name)
        else:
            print(f"[demo captioner] dataset {name} is not available here, training without it", file=sys.stderr)
    if not out:
        sources.load(datasets[0], "captioner", limit=1)  # raises FileNotFoundError naming the fix
    return out


def load_data(datasets, part: str, limit: Optional[int]) -> Data:
    data = Data()
    for name in datasets:
        split = sources.load(name, part, limit=limit)
        data.images.extend(split.images)
        data.captions.extend(desc.describe_batch(split.label_names(), split.images))
        data.dataset.extend([name] * len(split))
        data.keys.extend(split.keys)
        data.sizes[name] = len(split)
    return data


def pixel_values(processor, images: list[np.ndarray]):
    """Exactly the CLIPImageProcessor's preprocessing (resize, centre crop, rescale, normalize) as one float
    tensor: the processor itself, fed stacked uint8 tensors of each image size instead of one PIL image
    at a time (~2x faster; tests check the two agree)."""
    import torch

    processor = getattr(processor, "image_processor", processor)
    crop = processor.crop_size
    out = torch.zeros((len(images), 3, crop["height"], crop["width"]))
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for rows in by_shape.values():
        for lo in range(0, len(rows), 4096):
            chunk = rows[lo:lo + 4096]
            batch = torch.from_numpy(np.stack([images[i] for i in chunk])).permute(0, 3, 1, 2).contiguous()
            out[chunk] = processor(images=batch, return_tensors="pt")["pixel_values"]
    return out


# ------------------------------------------------------------------------------------ model parts

def build_tokenizer(captions: list[str]):
    """A word-level tokenizer trained on the captions and the chat prompt's words, with <pad>, <s> (BOS),
    </s> (EOS), <unk> and <image>. No post-processor: the chat template writes BOS itself, so the caption
    stage (add_special_tokens off for a prompt that starts with BOS) and vLLM (add_special_tokens on) read
    the very same ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.train_from_iterator(sorted(set(captions)) + [PROMPT_WORDS], trainers.WordLevelTrainer(special_tokens=SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN},
                                   padding_side="left", model_max_length=MAX_POSITIONS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(s: Settings, tokenizer):
    """CLIP preprocessing at the training size + the tokenizer + the chat template; the processor expands
    the one <image> of a prompt to the (image_size / patch_size)^2 patch tokens the projector fills."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": s.image_size},
                                         crop_size={"height": s.image_size, "width": s.image_size})
    # CLIP adds a CLS position (num_additional_image_tokens=1); the "default" strategy drops it again.
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=s.patch_size,
                          vision_feature_select_strategy=s.feature_strategy, num_additional_image_tokens=1,
                          image_token=IMAGE_TOKEN, chat_template=CHAT_TEMPLATE)


def build_model(s: Settings, tokenizer):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if s.feature_strategy not in ("default", "full"):
        raise ValueError(f"feature_strategy must be 'default' or 'full', got {s.feature_strategy!r}")
    heads = s.text_heads
    vision = CLIPVisionConfig(hidden_size=s.vision_hidden, intermediate_size=s.vision_mlp,
                              num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
                              image_size=s.image_size, patch_size=s.patch_size, projection_dim=s.vision_hidden,
                              attention_dropout=0.0)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s.text_hidden, intermediate_size=s.text_mlp,
                       num_hidden_layers=s.text_layers, num_attention_heads=heads, num_key_value_heads=heads,
                       head_dim=HEAD_DIM, max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy=s.feature_strategy, vision_feature_layer=-1,
                         image_seq_length=image_tokens(s), tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(s.seed)
    model = LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                            tokenizer.pad_token_id)
    gen.max_new_tokens = MAX_CAPTION_TOKENS  # the caption stage's own max_new_tokens overrides it
    return model


def image_tokens(s: Settings) -> int:
    """The <image> tokens one image becomes: a CLIP patch token each, plus CLS under the "full" strategy."""
    return (s.image_size // s.patch_size) ** 2 + (s.feature_strategy == "full")


def prompt_ids(processor):
    """The token ids of the rendered chat prompt of PAPER_PROMPT with <image> expanded: exactly what the
    caption stage feeds (render_prompt + the processor, no special tokens added)."""
    from PIL import Image

    text = render_prompt(processor, PAPER_PROMPT, "llava")
    size = processor.image_processor.crop_size
    blank = Image.new("RGB", (size["width"], size["height"]))
    return processor(images=[blank], text=[text], add_special_tokens=False, return_tensors="pt")["input_ids"][0]


def encode_labels(tokenizer, captions: list[str]):
    """Caption tokens + EOS, padded with -100 (they follow the prompt; the model shifts them itself)."""
    import torch

    ids = tokenizer(captions, add_special_tokens=False)["input_ids"]
    width = min(max(len(i) for i in ids) + 1, MAX_CAPTION_TOKENS)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for row, seq in enumerate(ids):
        seq = (seq + [tokenizer.eos_token_id])[:width]
        labels[row, :len(seq)] = torch.tensor(seq)
    return labels


def batch_inputs(prompt, caps, pad_id: int):
    """input_ids = prompt + caption (+ right padding), labels = -100 on the prompt (image tokens included)
    and the padding. No attention mask is needed: the padding only follows the real tokens and attention
    is causal, so no real position ever sees it."""
    import torch

    width = int((caps != -100).sum(1).max())
    caps = caps[:, :width]
    n = len(caps)
    input_ids = torch.cat([prompt.expand(n, -1), caps.masked_fill(caps == -100, pad_id)], 1)
    labels = torch.cat([torch.full((n, len(prompt)), -100, dtype=torch.long), caps], 1)
    return input_ids, labels


def describe_model(config) -> str:
    """One line: the three parts and their sizes."""
    v, t = config.vision_config, config.text_config
    return (f"LLaVA: CLIP vision {v.hidden_size}x{v.num_hidden_layers} (image {v.image_size}, patch {v.patch_size}, "
            f"{(v.image_size // v.patch_size) ** 2 + (config.vision_feature_select_strategy == 'full')} image tokens) + MLP projector + Llama {t.hidden_size}x"
            f"{t.num_hidden_layers} ({t.num_attention_heads} heads of head_dim {t.head_dim}, vocabulary {t.vocab_size})")


def to_hub_layout(folder) -> None:
    """Rewrite model.safetensors to the hub's LLaVA layout (llava-hf/llava-1.5-7b-hf): `vision_tower.
    vision_model.*`, `multi_modal_projector.*`, `language_model.model.*` (lm_head tied, not stored).
    transformers 5 saves the vision tower as `vision_tower.*` (its CLIPVisionModel lost the inner
    `vision_model`), which vLLM's LLaVA cannot map; transformers still reads the hub layout (its
    key renaming for legacy checkpoints), so this one layout loads in both."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    weights = load_file(path)
    out = {}
    for key, value in weights.items():
        for old, new in LAYOUT:
            if key.startswith(old) and not key.startswith(new):
                key = new + key[len(old):]
                break
        out[key] = value
    save_file(dict(sorted(out.items())), path, metadata={"format": "pt"})


def lr_at(step: int, s: Settings) -> float:
    """Linear warmup, then cosine decay to 10% of the peak: a pure function of the step."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    t = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


# --------------------------------------------------------------------------------------- training

def _fmt(seconds: float) -> str:
    return time.strftime("%M:%S", time.gmtime(max(seconds, 0)))


def train_loop(model, pixels, labels, prompt, pad_id: int, s: Settings, out=sys.stderr) -> list[float]:
    """Teacher-forced AdamW training on the caption tokens; prints step, loss, rate and time left;
    returns the loss curve."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(s.seed)
    order, pos = torch.randperm(len(labels), generator=gen), 0
    model.train()
    losses, smooth, t0, every = [], None, time.monotonic(), max(1, s.steps // 20)
    for step in range(s.steps):
        if pos + s.batch_size > len(order):
            order, pos = torch.randperm(len(labels), generator=gen), 0
        idx = order[pos:pos + s.batch_size]
        pos += s.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
        input_ids, lab = batch_inputs(prompt, labels[idx], pad_id)
        loss = model(input_ids=input_ids, pixel_values=pixels[idx], labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        smooth = losses[-1] if smooth is None else 0.9 * smooth + 0.1 * losses[-1]
        if (step + 1) % every == 0 or step + 1 == s.steps:
            el = time.monotonic() - t0
            rate = (step + 1) / el
            print(f"[demo captioner] step {step + 1}/{s.steps}  loss {smooth:.3f}  {rate:.1f} steps/s "
                  f"({rate * s.batch_size:,.0f} img/s)  elapsed {_fmt(el)}  left {_fmt((s.steps - step - 1) / rate)}",
                  file=out, flush=True)
    model.eval()
    return losses


def generate_captions(model, tokenizer, pixels, prompt, batch: int = 250) -> list[str]:
    """Greedy captions after the chat prompt (the prompt tokens cut off), as the caption stage makes them."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            px = pixels[i:i + batch]
            ids = prompt.expand(len(px), -1)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=px,
                                 do_sample=False, num_beams=1, max_new_tokens=MAX_CAPTION_TOKENS)
            out.extend(t.strip() for t in tokenizer.batch_decode(gen[:, len(prompt):], skip_special_tokens=True))
    return out


# ------------------------------------------------------------------------------------- evaluation

def caption_pattern(class_names) -> re.Pattern:
    """describe()'s grammar, to read the attributes back out of a generated caption."""
    alt = lambda words: "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))  # noqa: E731
    colours = alt(list(desc.PALETTE) + list(desc.GREY_TONES))
    return re.compile(rf"^(?:a (?P<brightness>dark|bright) photo of )?an? (?P<small>small )?(?P<colour>{colours}) "
                      rf"(?P<cls>{alt(class_names)})(?P<large> filling the frame)? on an? (?P<background>{colours}) "
                      rf"background$")


def parse_caption(caption: str, pattern: re.Pattern) -> Optional[dict]:
    """{class, colour, size, background, brightness} of a caption in describe()'s grammar, else None."""
    m = pattern.match(caption.strip().lower())
    if not m:
        return None
    size = "small" if m["small"] else "large" if m["large"] else "medium"
    return {"class": m["cls"], "colour": m["colour"], "size": size, "background": m["background"],
            "brightness": m["brightness"] or "unsaid"}


def token_f1(pred: str, truth: str) -> float:
    p, t = pred.split(), truth.split()
    common = sum(min(p.count(w), t.count(w)) for w in set(p))
    if not common:
        return 0.0
    prec, rec = common / len(p), common / len(t)
    return 2 * prec * rec / (prec + rec)


def mentions(caption: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", caption) is not None


def evaluate(preds: list[str], truths: list[str], datasets: list[str], class_names: dict[str, list[str]]) -> dict:
    """Held-out caption accuracy, overall and per dataset."""
    report = {}
    for name in ["all"] + sorted(set(datasets)):
        rows = [i for i, d in enumerate(datasets) if name in ("all", d)]
        names = sorted({c for d in set(datasets[i] for i in rows) for c in class_names[d]})
        pattern = caption_pattern(names)
        hits = {k: 0 for k in ("class", "colour", "size", "background", "brightness")}
        parsed = exact = 0
        f1 = 0.0
        for i in rows:
            truth = parse_caption(truths[i], pattern)
            pred = parse_caption(preds[i], pattern)
            exact += preds[i] == truths[i]
            f1 += token_f1(preds[i], truths[i])
            parsed += pred is not None
            if pred is None:  # not in describe()'s grammar: only the class word can still be right
                hits["class"] += mentions(preds[i], truth["class"])
                continue
            for k in hits:
                hits[k] += pred[k] == truth[k]
        n = max(len(rows), 1)
        report[name] = {"n": len(rows), "class_accuracy": hits["class"] / n,
                        **{f"{k}_accuracy": hits[k] / n for k in ("colour", "size", "background", "brightness")},
                        "exact_match": exact / n, "token_f1": f1 / n, "well_formed": parsed / n}
    return report


# ------------------------------------------------------------------------------ train, save, reuse

def is_finished(out_dir, settings: Settings) -> bool:
    """True when `out_dir` holds a captioner trained with exactly these settings (and this version)."""
    path = Path(out_dir)
    try:
        done = json.loads((path / "training.json").read_text())
    except (OSError, ValueError):
        return False
    # a model trained while a dataset was absent is retrained once that dataset is there
    present = [d for d in settings.datasets if sources.available(d)]
    return (done.get("settings") == settings.to_json() and done.get("datasets_used") == present
            and (path / "eval.json").exists() and (path / "model.safetensors").exists())


def _load() -> float:
    """The 1-minute load average (training time depends on how busy the machine is)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def train(out_dir, settings: Settings = Settings(), threads: Optional[int] = None, out=sys.stderr) -> Path:
    """Train, evaluate and save the captioner into `out_dir` (written beside it, then moved in place)."""
    import torch

    t_start, cpu_start, load_start = time.monotonic(), time.process_time(), _load()
    # One thread by default: on a small shared machine two threads contend and run several times slower.
    torch.set_num_threads(threads or 1)
    names = usable_datasets(settings.datasets)
    print(f"[demo captioner] data: {', '.join(names)} (captioner part for training, test part held out)", file=out)
    train_data = load_data(names, "captioner", settings.train_limit)
    test_data = load_data(names, "test", settings.eval_limit)
    tokenizer = build_tokenizer(train_data.captions)
    processor = build_processor(settings, tokenizer)
    pixels, test_pixels = pixel_values(processor, train_data.images), pixel_values(processor, test_data.images)
    labels = encode_labels(tokenizer, train_data.captions)
    prompt = prompt_ids(processor)
    model = build_model(settings, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    t_prep = time.monotonic() - t_start
    print(f"[demo captioner] {len(labels):,} training images {train_data.sizes}, vocabulary {len(tokenizer)}, "
          f"model {n_params / 1e6:.2f}M parameters, data ready in {t_prep:.0f}s; training {settings.steps} steps "
          f"of {settings.batch_size} (prompt {len(prompt)} tokens; load average {load_start:.1f})", file=out, flush=True)

    t0, c0 = time.monotonic(), time.process_time()
    losses = train_loop(model, pixels, labels, prompt, tokenizer.pad_token_id, settings, out=out)
    t_train, cpu_train = time.monotonic() - t0, time.process_time() - c0
    t0 = time.monotonic()
    preds = generate_captions(model, tokenizer, test_pixels, prompt)
    class_names = {n: sources.class_names(n) for n in names}
    report = evaluate(preds, test_data.captions, test_data.dataset, class_names)
    t_eval = time.monotonic() - t0

    final = Path(out_dir)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    to_hub_layout(tmp)
    processor.save_pretrained(tmp)
    samples = [{"key": k, "truth": t, "caption": p}
               for k, t, p in list(zip(test_data.keys, test_data.captions, preds))[:: max(1, len(preds) // 20)]]
    (tmp / "eval.json").write_text(json.dumps({"version": VERSION, "part": "test", "metrics": report,
                                               "samples": samples}, indent=2) + "\n")
    training = {"version": VERSION, "settings": settings.to_json(), "datasets_used": names,
                "train_images": train_data.sizes, "test_images": test_data.sizes, "parameters": n_params, "model": describe_model(model.config),
                "vocabulary": len(tokenizer), "prompt_tokens": len(prompt), "steps": settings.steps, "final_loss": float(np.mean(losses[-20:])),
                "seconds": {"data": round(t_prep, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                            "total": round(time.monotonic() - t_start, 1),
                            "cpu": round(time.process_time() - cpu_start, 1),
                            "train_cpu": round(cpu_train, 1)},
                "load_average": {"start": round(load_start, 2), "end": round(_load(), 2)},
                "threads": torch.get_num_threads(), "torch": torch.__version__}
    (tmp / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    print(summary(final), file=out, flush=True)
    return final


def summary(out_dir) -> str:
    """A readable summary of a finished captioner folder."""
    path = Path(out_dir)
    training = json.loads((path / "training.json").read_text())
    metrics = json.loads((path / "eval.json").read_text())["metrics"]
    lines = [f"demo captioner {training['version']} at {path}",
             f"  {training.get('model', 'model')}, {training['parameters'] / 1e6:.2f}M parameters",
             f"  trained on {training['train_images']} images, {training['steps']} steps, "
             f"{training['seconds']['total']:.0f}s in all (training {training['seconds']['train']:.0f}s; "
             f"{training['seconds']['cpu']:.0f} CPU-seconds in all; load average "
             f"{training.get('load_average', {}).get('start', float('nan')):.1f}), final loss {training['final_loss']:.3f}",
             "  held-out accuracy (test part):"]
    for name, m in metrics.items():
        lines.append(f"    {name:<14} n={m['n']:<5} class {m['class_accuracy']:.1%}  colour {m['colour_accuracy']:.1%}  "
                     f"size {m['size_accuracy']:.1%}  background {m['background_accuracy']:.1%}  "
                     f"brightness {m['brightness_accuracy']:.1%}  exact {m['exact_match']:.1%}  "
                     f"token F1 {m['token_f1']:.3f}")
    return "\n".join(lines)


def ensure_captioner(out_dir, force: bool = False, threads: Optional[int] = None, **settings) -> Path:
    """The trained captioner folder: reused when finished with the same settings, else trained now.

    Keyword arguments are Settings fields (steps, datasets, seed, ...)."""
    if "datasets" in settings:
        settings["datasets"] = tuple(settings["datasets"])
    s = Settings(**settings)
    if not force and is_finished(out_dir, s):
        print(f"[demo captioner] reusing the finished captioner at {out_dir} ({s.version}, {s.steps} steps)",
              file=sys.stderr)
        return Path(out_dir)
    return train(out_dir, s, threads=threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Train (or reuse) the demo's small real image captioner.")
    p.add_argument("out_dir", help="folder for the Hugging Face model (the caption stage's caption.model)")
    p.add_argument("--steps", type=int, default=Settings.steps, help=f"optimizer steps (default {Settings.steps})")
    p.add_argument("--datasets", default=",".join(sources.DATASETS),
                   help="comma-separated, from " + ", ".join(sources.DATASETS))
    p.add_argument("--seed", type=int, default=Settings.seed)
    p.add_argument("--train-limit", type=int, default=None, help="images per dataset to train on (default: all)")
    p.add_argument("--eval-limit", type=int, default=Settings.eval_limit, help="held-out images per dataset")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1: fastest on a busy 2-core machine)")
    p.add_argument("--force", action="store_true", help="train again even if a finished model is there")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    datasets = tuple(d.strip() for d in a.datasets.split(",") if d.strip())
    unknown = [d for d in datasets if d not in sources.DATASETS]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}; choose from {list(sources.DATASETS)}")
    try:
        path = ensure_captioner(a.out_dir, force=a.force, threads=a.threads, steps=a.steps, datasets=datasets,
                                seed=a.seed, train_limit=a.train_limit, eval_limit=a.eval_limit)
    except FileNotFoundError as err:
        print(f"demo captioner: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
