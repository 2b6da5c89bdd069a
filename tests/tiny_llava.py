"""A tiny random LLaVA that both engines run (helper module for tests, not a test).

    path = tiny_llava(tmp_path_factory.mktemp("llava"))   # ~2 s once transformers is imported

veclip.caption.tiny.build_tiny_llava(size="vllm"): CLIP vision tower (32 px images, 8 px patches),
a 2-layer Llama with hidden 128 and 2 heads (head_dim 64: vLLM's CPU attention refuses 16), the
word-level tokenizer with `<image>` and a LLaVA-1.5 chat template, a LlavaProcessor; weights saved
in the hub layout (`vision_tower.vision_model.*`). Loadable by transformers
(AutoModelForImageTextToText + AutoProcessor) and by vLLM. Random weights: captions are word salad.
"""

from __future__ import annotations

import io
import os

from veclip.caption.tiny import build_tiny_llava


def tiny_llava(folder) -> str:
    """Build (once per folder) and return the model folder."""
    path = os.path.join(str(folder), "tiny-llava-vllm")
    if not os.path.isfile(os.path.join(path, "config.json")):
        build_tiny_llava(path, size="vllm")
    return path


def png(color=(200, 30, 30), size=(40, 30)) -> bytes:
    """A small solid-colour PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()
