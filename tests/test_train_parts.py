"""The trainer's small parts, without Spark: text mixing, LR schedule, parameter groups, checkpoints,
worker-side sample decoding and file sharding."""

from __future__ import annotations

import io
import random

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from tests.gold_fixture import coco_rows
from veclip.config import ConfigError, load_config
from veclip.config.train import TrainConfig
from veclip.train import mixing, optim
from veclip.train.checkpoint import Checkpoints
from veclip.train.data import GoldDataError, GoldFile, shard_files, steps_per_epoch
from veclip.train.samples import SOURCES, SampleSettings, SampleTransform, crop_box, decode_crop


# -- mixing -------------------------------------------------------------------------------------
def test_text_choice_is_a_function_of_seed_epoch_and_key():
    keys = [f"k{i}" for i in range(2000)]
    a = [mixing.choose_text("alt", "vecap", 0.5, 7, 3, k) for k in keys]
    assert a == [mixing.choose_text("alt", "vecap", 0.5, 7, 3, k) for k in keys]
    share = sum(src == mixing.VECAP for _, src in a) / len(a)
    assert 0.46 < share < 0.54
    other_epoch = [mixing.choose_text("alt", "vecap", 0.5, 7, 4, k)[1] for k in keys]
    assert other_epoch != [src for _, src in a]  # a sample sees both texts over epochs


@pytest.mark.parametrize("p, expected", [(0.0, mixing.ALT_TEXT), (1.0, mixing.VECAP)])
def test_p_zero_is_alt_text_only_and_p_one_vecap_only(p, expected):
    assert {mixing.choose_text("alt", "vecap", p, 0, 0, f"k{i}")[1] for i in range(500)} == {expected}


def test_missing_vecap_falls_back_to_alt_text_and_baseline_never_sees_vecap():
    assert mixing.choose_text("a red bus", None, 1.0, 0, 0, "k") == ("a red bus", mixing.ALT_TEXT)
    assert mixing.choose_text("a red bus", "  ", 1.0, 0, 0, "k") == ("a red bus", mixing.ALT_TEXT)
    assert mixing.choose_text(None, "a bus on a street", 0.5, 0, 0, "k") == ("a bus on a street", mixing.VECAP)
    assert mixing.choose_text(None, "a bus on a street", 0.0, 0, 0, "k") == ("", mixing.NONE)
    assert mixing.choose_text(float("nan"), None, 0.5, 0, 0, "k") == ("", mixing.NONE)
    with pytest.raises(ValueError, match="p_vecap"):
        mixing.choose_text("a", "b", 1.5, 0, 0, "k")


# -- optimizer and schedule ---------------------------------------------------------------------
def test_lr_warms_up_linearly_then_decays_by_cosine_to_zero():
    lrs = [optim.lr_at(s, 1.0, warmup=10, total=110) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_no_weight_decay_on_gains_biases_and_logit_scale():
    from veclip.train.model import build

    model = build("veclip-tiny").model
    plain, decay = optim.param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in plain_names and plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.2
    assert any(n.endswith("ln_final.weight") for n in plain_names)
    assert all(not n.endswith(".bias") for n in decay_names)
    assert any(n.endswith("attn.in_proj_weight") for n in decay_names)
    assert len(plain_names) + len(decay_names) == len(list(model.parameters()))


# -- checkpoints --------------------------------------------------------------------------------
def test_checkpoints_keep_the_latest_k_and_load_the_latest(tmp_path):
    ckpts = Checkpoints(tmp_path / "run", keep=2)
    assert ckpts.load() is None and ckpts.latest() is None
    for step in (5, 10, 15):
        ckpts.save(step, {"model": {"w": torch.full((2,), float(step))}, "step": step})
    assert ckpts.steps() == [10, 15]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_00000010.pt", "step_00000015.pt"]
    assert ckpts.load()["step"] == 15 and ckpts.load(step=10)["model"]["w"][0] == 10
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 5"):
        ckpts.load(step=5)


def test_a_half_written_checkpoint_is_never_the_latest(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=3)
    ckpts.save(1, {"model": {}, "step": 1})
    (tmp_path / ".step_00000002.pt.tmp-123").write_bytes(b"\x80partial")  # a save killed mid-write
    assert ckpts.steps() == [1] and ckpts.load()["step"] == 1


def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_one_before_is_loaded(tmp_path, caplog):
    ckpts = Checkpoints(tmp_path, keep=3)
    for step in (4, 8, 12):
        ckpts.save(step, {"model": {"w": torch.full((64,), float(step))}, "step": step})
    latest = ckpts.path(12)
    latest.write_bytes(latest.read_bytes()[:300])  # a disk that lost the tail of the file
    with caplog.at_level("WARNING", logger="veclip.train.checkpoint"):
        state = ckpts.load()
    assert state["step"] == 8 and ckpts.steps() == [4, 8]
    assert f"checkpoint {latest} is unreadable" in caplog.text and "falling back to the one before" in caplog.text
    assert (tmp_path / "step_00000012.pt.corrupt").is_file()  # kept for inspection, out of the step list
    ckpts.path(8).write_bytes(b"not a checkpoint at all")
    ckpts.path(4).write_bytes(b"")
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        ckpts.load()
    with pytest.raises(FileNotFoundError):
        ckpts.load(step=12)  # an explicit step never falls back


def test_a_checkpoint_is_registered_once_and_candidate_is_not_moved_by_a_rerun(tmp_path):
    import mlflow

    from veclip.train import model_export
    from veclip.train.model import build

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("register-once")
    torch.manual_seed(0)
    built = build("veclip-tiny")
    ckpts = Checkpoints(tmp_path / "checkpoints" / "run-a")
    state = {"model": built.model.state_dict(), "model_name": "veclip-tiny", "image_size": built.image_size}
    first = str(ckpts.save(10, {**state, "step": 10}))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")

    def export(checkpoint):
        with mlflow.start_run() as run:  # every job (and every --resume) has its own MLflow run
            return model_export.export(checkpoint, "clip-once", jpeg.getvalue(), "a red square"), run.info.run_id

    v1, run1 = export(first)
    v1_again, _ = export(first)              # the finished run resumed: the same final checkpoint
    client = mlflow.MlflowClient()
    assert v1_again == v1 and len(client.search_model_versions("name='clip-once'")) == 1
    version = client.get_model_version("clip-once", v1)
    assert version.run_id == run1 and version.tags["veclip.train_run"] == "run-a"
    assert version.tags["veclip.checkpoint_step"] == "10" and len(version.tags["veclip.checkpoint_sha256"]) == 64
    later = str(ckpts.save(20, {**state, "step": 20}))  # a new checkpoint is a new version
    v2, _ = export(later)
    assert v2 != v1 and str(client.get_model_version_by_alias("clip-once", "candidate").version) == v2
    assert export(first)[0] == v1            # re-exporting the old one moves nothing
    assert str(client.get_model_version_by_alias("clip-once", "candidate").version) == v2
    assert len(client.search_model_versions("name='clip-once'")) == 2


# -- samples (what petastorm's workers run) -----------------------------------------------------
def test_crop_box_stays_inside_and_keeps_the_area_fraction():
    rng = random.Random(0)
    boxes = [crop_box(500, 400, rng, 0.9) for _ in range(200)]
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 400
        assert (right - left) * (bottom - top) >= 0.89 * 500 * 400
    assert len(set(boxes)) > 100
    # A panorama has no large crop with an allowed aspect ratio: the central 4:3 crop.
    assert crop_box(1000, 300, rng, 0.9) == (300, 0, 700, 300)


def test_transform_decodes_real_images_and_flags_bad_rows_without_dropping_them():
    rows = coco_rows(shared_path("coco-mini"), limit=6)
    rows[0]["image"] = square(rows[0]["image"])  # room for crops of >= 90% area within ratio 3/4..4/3
    rows[1]["image"] = b"not a jpeg"
    rows[2]["alt_text"], rows[2]["vecap"] = None, None
    pdf = pd.DataFrame(rows)[["key", "image", "alt_text", "vecap"]]
    settings = SampleSettings.from_config(TrainConfig(model="veclip-tiny", p_vecap=0.5, seed=1), image_size=64)
    tf = SampleTransform(settings, start_epoch=0, chunks_per_epoch=1)
    out = tf(pdf)
    assert list(out["key"]) == list(pdf["key"]) and list(out["ok"]) == [True, False, False, True, True, True]
    assert out["image"][0].shape == (3, 64, 64) and out["image"][0].dtype == np.uint8
    assert out["image"][0].std() > 10  # a real photo, not a blank
    assert out["tokens"][0].shape == (77,) and out["tokens"][0][0] == 49406  # <start_of_text>
    assert out["source"][2] == SOURCES[mixing.NONE]
    again = SampleTransform(settings, 0, 1)(pdf)
    assert np.array_equal(np.stack(out["image"]), np.stack(again["image"]))  # crops are reproducible
    next_epoch = tf(pdf)  # second call of a one-row-group reader = epoch 1: another crop
    assert not np.array_equal(out["image"][0], next_epoch["image"][0])


def square(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as img:
        side = min(img.size)
        buf = io.BytesIO()
        img.crop((0, 0, side, side)).save(buf, format="JPEG")
    return buf.getvalue()


def test_decode_crop_handles_non_rgb_images():
    buf = io.BytesIO()
    Image.new("LA", (50, 30), (120, 200)).save(buf, format="PNG")
    arr = decode_crop(buf.getvalue(), 32, random.Random(0), 0.9)
    assert arr.shape == (3, 32, 32) and arr.flags.c_contiguous


# -- sharding -----------------------------------------------------------------------------------
def test_files_are_balanced_over_ranks_and_every_file_read_once():
    files = [GoldFile(f"file:///g/part-{i}.parquet", (rows,)) for i, rows in enumerate([50, 40, 30, 20, 10, 5])]
    shards = shard_files(files, 2)
    assert sorted(f.url for s in shards for f in s) == sorted(f.url for f in files)
    assert sorted(sum(f.rows for f in s) for s in shards) == [75, 80]
    assert shards == shard_files(list(reversed(files)), 2)  # the same on every rank
    assert steps_per_epoch(shards, 16) == 4
    with pytest.raises(GoldDataError, match="2 non-empty Parquet file.*3 processes"):
        shard_files(files[:2], 3)


def test_config_refuses_the_thread_pool_and_inconsistent_modes():
    with pytest.raises(ConfigError, match="train.reader_pool"):
        load_config(None, ["train.reader_pool=thread"])
    with pytest.raises(ConfigError, match="train.mode=single runs one process"):
        load_config(None, ["train.mode=single", "train.num_processes=2"])


# -- runs: new, resumed, pinned -----------------------------------------------------------------
def test_a_new_run_refuses_a_folder_with_checkpoints_and_resume_finds_the_latest_run(tmp_path):
    from veclip.train.stage import pinned_version, resolve_run

    cfg = load_config(None, [f"paths.root={tmp_path}", "train.run_name=r1"])
    folder, run = resolve_run(cfg, resume=False)
    assert folder == str(tmp_path / "checkpoints" / "r1") and run is None
    Checkpoints(folder).save(3, {"model": {}, "step": 3})
    with pytest.raises(FileExistsError, match="pass --resume"):
        resolve_run(cfg, resume=False)
    with pytest.raises(FileNotFoundError, match="no run.json"):
        resolve_run(cfg, resume=True)
    (tmp_path / "checkpoints" / "r1" / "run.json").write_text(
        '{"gold_version": 4, "train": {"seed": 0, "batch_size": 32}}')
    unnamed = load_config(None, [f"paths.root={tmp_path}"])
    folder, run = resolve_run(unnamed, resume=True)  # no name: the most recent run
    assert folder.endswith("r1") and run["gold_version"] == 4
    assert pinned_version(unnamed, run) == 4  # the resumed run's version, not the latest
    with pytest.raises(ValueError, match="trained on gold version 4"):
        pinned_version(load_config(None, ["train.gold_version=5"]), run)
    with pytest.raises(FileNotFoundError, match="no run under"):
        resolve_run(load_config(None, [f"paths.root={tmp_path / 'empty'}"]), resume=True)


# -- initial weights and model folders ----------------------------------------------------------
def test_pretrained_weights_load_from_a_checkpoint_or_an_open_clip_folder(tmp_path):
    from veclip import clip
    from veclip.train.model import build, load_weights, save_folder

    torch.manual_seed(0)
    source = build("veclip-tiny").model
    save_folder(source, "veclip-tiny", 64, tmp_path / "folder")
    Checkpoints(tmp_path / "run").save(7, {"model": source.state_dict(), "model_name": "veclip-tiny", "step": 7})
    for path in (tmp_path / "folder", tmp_path / "run" / "step_00000007.pt"):
        torch.manual_seed(1)
        target = build("veclip-tiny").model
        load_weights(target, path)
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_weights(build("veclip-small").model, tmp_path / "folder")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_weights(source, tmp_path / "nope.pt")
    # A non-native training size is kept in the saved folder, so evaluation rebuilds the right model.
    bigger = build("veclip-tiny", image_size=96)
    save_folder(bigger.model, "veclip-tiny", bigger.image_size, tmp_path / "96")
    loaded, preprocess, _ = clip.load(tmp_path / "96")
    pixels = preprocess(Image.new("RGB", (120, 90), (10, 200, 30))).unsqueeze(0)
    assert pixels.shape[-1] == 96 and loaded.encode_image(pixels).shape == (1, 128)
