"""A small real image captioner for the offline demo, trained here on Fashion-MNIST and CIFAR-10.

    python -m veclip.demo.captioner ./work/models/demo-captioner            # train (~5 min, one core) or reuse
    python -m veclip.demo.captioner OUT --steps 200 --datasets fashion-mnist --force

    from veclip.demo.captioner import ensure_captioner
    path = ensure_captioner("./work/models/demo-captioner")   # then --set caption.model=<path>

No pretrained vision-language model installs offline, so the demo trains its own: a transformers
`VisionEncoderDecoderModel` (a small ViT encoder, a small GPT-2 decoder with cross-attention), a
word-level tokenizer trained with `tokenizers` on the ground-truth captions, and a `ViTImageProcessor`.
The targets are veclip.demo.describe's captions (class name + colour/tone, size in frame, background,
brightness measured from the pixels) of the "captioner" part of each dataset (veclip.demo.sources);
CIFAR-10 is skipped, with a message, where ../shared/data/cifar10 is absent.

The folder has the layout of any Hugging Face VisionEncoderDecoder captioner (model.safetensors,
config.json, generation_config.json, preprocessor_config.json, tokenizer files), so the caption
stage loads it exactly as it loads a hub model. Beside them: `training.json` (settings, version,
steps, seconds, data sizes) and `eval.json` (held-out accuracy on the "test" part: class word,
each attribute, exact match, token F1). A folder whose training.json matches the requested settings
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

from veclip.demo import describe as desc
from veclip.demo import sources

log = logging.getLogger(__name__)

VERSION = f"demo-captioner-1+{desc.VERSION}"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
MAX_CAPTION_TOKENS = 24


@dataclass(frozen=True)
class Settings:
    """Everything that decides the trained weights (a cached folder is reused only for equal settings)."""

    steps: int = 1000                 # optimizer steps
    batch_size: int = 64
    lr: float = 2e-3                  # peak AdamW learning rate (linear warmup, cosine decay to 10%)
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    datasets: tuple[str, ...] = sources.DATASETS
    image_size: int = 32
    patch_size: int = 8               # 4 x 4 patches: a quarter of the compute of 4-pixel patches
    hidden: int = 128                 # encoder and decoder width
    encoder_layers: int = 3
    decoder_layers: int = 2
    heads: int = 4
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
    """Exactly the ViTImageProcessor's preprocessing (PIL bilinear resize, rescale, normalize), as one
    float tensor, ~15x faster than calling it per image (tests check the two agree)."""
    import torch
    from PIL import Image

    if not images:
        return torch.zeros((0, 3, processor.size["height"], processor.size["width"]))
    hw = (processor.size["height"], processor.size["width"])
    resample = Image.Resampling(processor.resample)
    arr = np.stack([im if im.shape[:2] == hw else np.asarray(Image.fromarray(im).resize(hw[::-1], resample))
                    for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() * processor.rescale_factor
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


# ------------------------------------------------------------------------------------ model parts

def build_tokenizer(captions: list[str]):
    """A word-level tokenizer trained on the captions, with <pad>, <s> (BOS), </s> (EOS), <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.train_from_iterator(sorted(set(captions)), trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left", model_max_length=MAX_CAPTION_TOKENS)


def build_model(s: Settings, tokenizer):
    import torch
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    encoder = ViTConfig(hidden_size=s.hidden, num_hidden_layers=s.encoder_layers, num_attention_heads=s.heads,
                        intermediate_size=2 * s.hidden, image_size=s.image_size, patch_size=s.patch_size,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=s.hidden, n_layer=s.decoder_layers, n_head=s.heads,
                         n_positions=MAX_CAPTION_TOKENS + 8, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         add_cross_attention=True, is_decoder=True, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(s.seed)
    model = VisionEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id = gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id, gen.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen.max_new_tokens = MAX_CAPTION_TOKENS  # the caption stage's own max_new_tokens overrides it
    gen.suppress_tokens = [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]
    return model


def encode_labels(tokenizer, captions: list[str]):
    """Labels = caption tokens + EOS, padded with -100 (the model shifts them right behind BOS)."""
    import torch

    ids = tokenizer(captions, add_special_tokens=False)["input_ids"]
    width = min(max(len(i) for i in ids) + 1, MAX_CAPTION_TOKENS)
    labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for row, seq in enumerate(ids):
        seq = (seq + [tokenizer.eos_token_id])[:width]
        labels[row, :len(seq)] = torch.tensor(seq)
    return labels


def lr_at(step: int, s: Settings) -> float:
    """Linear warmup, then cosine decay to 10% of the peak: a pure function of the step."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    t = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


# --------------------------------------------------------------------------------------- training

def _fmt(seconds: float) -> str:
    return time.strftime("%M:%S", time.gmtime(max(seconds, 0)))


def train_loop(model, pixels, labels, s: Settings, out=sys.stderr) -> list[float]:
    """Teacher-forced AdamW training; prints step, loss, rate and time left; returns the loss curve."""
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
        lab = labels[idx]
        # the decoder reads BOS + the caption; positions after EOS are padding
        mask = torch.cat([torch.ones_like(lab[:, :1]), (lab[:, :-1] != -100).long()], 1)
        loss = model(pixel_values=pixels[idx], labels=lab, decoder_attention_mask=mask).loss
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


def generate_captions(model, tokenizer, pixels, batch: int = 256) -> list[str]:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            ids = model.generate(pixel_values=pixels[i:i + batch], do_sample=False, num_beams=1)
            out.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
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


def train(out_dir, settings: Settings = Settings(), threads: Optional[int] = None, out=sys.stderr) -> Path:
    """Train, evaluate and save the captioner into `out_dir` (written beside it, then moved in place)."""
    import torch
    from transformers import ViTImageProcessor

    t_start, cpu_start = time.monotonic(), time.process_time()
    # One thread by default: on a small shared machine two threads contend and run several times slower.
    torch.set_num_threads(threads or 1)
    names = usable_datasets(settings.datasets)
    print(f"[demo captioner] data: {', '.join(names)} (captioner part for training, test part held out)", file=out)
    train_data = load_data(names, "captioner", settings.train_limit)
    test_data = load_data(names, "test", settings.eval_limit)
    processor = ViTImageProcessor(size={"height": settings.image_size, "width": settings.image_size})
    pixels, test_pixels = pixel_values(processor, train_data.images), pixel_values(processor, test_data.images)
    tokenizer = build_tokenizer(train_data.captions)
    labels = encode_labels(tokenizer, train_data.captions)
    model = build_model(settings, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    t_prep = time.monotonic() - t_start
    print(f"[demo captioner] {len(labels):,} training images {train_data.sizes}, vocabulary {len(tokenizer)}, "
          f"model {n_params / 1e6:.2f}M parameters, data ready in {t_prep:.0f}s; training {settings.steps} steps "
          f"of {settings.batch_size}", file=out, flush=True)

    t0 = time.monotonic()
    losses = train_loop(model, pixels, labels, settings, out=out)
    t_train = time.monotonic() - t0
    t0 = time.monotonic()
    preds = generate_captions(model, tokenizer, test_pixels)
    class_names = {n: sources.class_names(n) for n in names}
    report = evaluate(preds, test_data.captions, test_data.dataset, class_names)
    t_eval = time.monotonic() - t0

    final = Path(out_dir)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    samples = [{"key": k, "truth": t, "caption": p}
               for k, t, p in list(zip(test_data.keys, test_data.captions, preds))[:: max(1, len(preds) // 20)]]
    (tmp / "eval.json").write_text(json.dumps({"version": VERSION, "part": "test", "metrics": report,
                                               "samples": samples}, indent=2) + "\n")
    training = {"version": VERSION, "settings": settings.to_json(), "datasets_used": names,
                "train_images": train_data.sizes, "test_images": test_data.sizes, "parameters": n_params,
                "vocabulary": len(tokenizer), "steps": settings.steps, "final_loss": float(np.mean(losses[-20:])),
                "seconds": {"data": round(t_prep, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                            "total": round(time.monotonic() - t_start, 1),
                            "cpu": round(time.process_time() - cpu_start, 1)},
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
             f"  trained on {training['train_images']} images, {training['steps']} steps, "
             f"{training['seconds']['total']:.0f}s in all (training {training['seconds']['train']:.0f}s), "
             f"final loss {training['final_loss']:.3f}",
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
