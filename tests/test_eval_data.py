"""Benchmark readers on real data: COCO-mini captions, a Karpathy-split JSON built from it, CIFAR-10
parquet and an ImageFolder tree of CIFAR images; class names, templates, and the eval config."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO, shared_path
from veclip.config import ConfigError, load_config
from veclip.config.evaluate import RetrievalSet, ZeroShotSet
from veclip.evaluate.datasets import load_coco, load_karpathy, load_retrieval, spread
from veclip.evaluate.embed import open_image
from veclip.evaluate.labelled import load_labelled, read_classnames
from veclip.evaluate.zeroshot import load_templates

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def coco():
    return shared_path("coco-mini", "captions.json")


@pytest.fixture(scope="module")
def cifar():
    return shared_path("cifar10", "test.parquet")


def test_coco_mini_pairs_every_caption_with_its_image(coco):
    data = load_coco("coco-mini", str(coco))
    assert len(data.images) == 159 and len(data.captions) == 795
    assert np.bincount(data.text_image).tolist() == [5] * 159
    doc = json.loads(coco.read_text())
    files = {img["id"]: img["file_name"] for img in doc["images"]}
    for ann in doc["annotations"][:50]:
        t = data.captions.index(ann["caption"].strip())
        assert data.images[data.text_image[t]].endswith(files[ann["image_id"]])
    assert all(p.startswith(str(coco.parent / "images")) for p in data.images)


def test_subset_is_evenly_spaced_and_keeps_pairs(coco):
    full = load_coco("coco-mini", str(coco))
    spec = RetrievalSet(name="coco-mini", path=str(coco))
    data = load_retrieval(spec, max_images=40)
    assert len(data.images) == 40 and len(data.captions) == 200
    assert data.counts["images_not_selected"] == 119 and data.counts["captions_not_selected"] == 595
    picked = spread(159, 40)
    assert picked[0] == 0 and picked[-1] == 158
    for t in range(0, 200, 7):
        original = full.captions.index(data.captions[t])
        assert full.images[full.text_image[original]] == data.images[data.text_image[t]]


def test_orphan_captions_and_captionless_images_are_counted(coco, tmp_path):
    doc = json.loads(coco.read_text())
    doc["images"].append({"id": 1, "file_name": "nothing.jpg"})
    doc["annotations"].append({"image_id": 424242424, "caption": "a caption of no image"})
    doc["annotations"].append({"image_id": doc["images"][0]["id"], "caption": None})
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(doc))
    data = load_coco("x", str(path), str(coco.parent / "images"))
    assert len(data.images) == 159 and len(data.captions) == 795
    assert data.counts == {"images_in_file": 160, "captions_in_file": 797, "captions_unknown_image": 1,
                           "captions_without_text": 1, "images_without_captions": 1, "images": 159,
                           "captions": 795}


def karpathy_from_coco(coco, path, n_test=100):
    doc = json.loads(coco.read_text())
    caps = {}
    for ann in doc["annotations"]:
        caps.setdefault(ann["image_id"], []).append(ann["caption"])
    images = []
    for i, img in enumerate(doc["images"]):
        sentences = [{"raw": c, "tokens": c.lower().split()} for c in caps[img["id"]]]
        images.append({"filepath": "images", "filename": img["file_name"], "imgid": i,
                       "split": "test" if i < n_test else "train", "sentences": sentences})
    images[0]["sentences"].append({"raw": "a sixth caption, over the cap", "tokens": []})
    images[1]["sentences"].append({"tokens": ["no", "raw"]})
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_karpathy_split_json(coco, tmp_path):
    path = karpathy_from_coco(coco, tmp_path / "dataset_coco.json")
    data = load_karpathy("k", str(path), str(coco.parent), split="test")
    assert len(data.images) == 100 and len(data.captions) == 500
    assert data.counts["images_other_splits"] == 59
    assert data.counts["captions_over_cap"] == 1 and data.counts["captions_without_text"] == 1
    assert data.captions[:5] == [s["raw"].strip() for s in json.loads(path.read_text())["images"][0]["sentences"][:5]]
    assert all(p.startswith(str(coco.parent / "images")) for p in data.images)
    uncapped = load_karpathy("k", str(path), str(coco.parent), captions_per_image=None)
    assert len(uncapped.captions) == 501
    with pytest.raises(ValueError, match=r"no image of .* is in split 'val' \(splits there: test=100, train=59\)"):
        load_karpathy("k", str(path), split="val")


def test_cifar_parquet_subset_covers_every_class(cifar):
    spec = ZeroShotSet(name="cifar10", path=str(cifar))
    data = load_labelled(spec, max_images=50)
    assert data.classnames == CIFAR_CLASSES
    assert np.bincount(data.labels).tolist() == [5] * 10
    assert data.counts == {"samples_in_file": 10000, "samples_not_selected": 9950}
    streamed = [b for batch in data.image_batches(16) for b in batch]
    table = pq.read_table(str(cifar), columns=["label", "jpeg"])
    rows = spread(10000, 50)
    assert streamed == [table.column("jpeg")[int(i)].as_py() for i in rows]
    assert data.labels.tolist() == [table.column("label")[int(i)].as_py() for i in rows]
    assert open_image(streamed[0]).size == (32, 32)


def test_parquet_needs_class_names_and_labels(cifar, tmp_path):
    with pytest.raises(ValueError, match="no class names"):
        load_labelled(ZeroShotSet(name="c", path=str(cifar), label_name_column=None))
    with pytest.raises(ValueError, match="no label column 'class'"):
        load_labelled(ZeroShotSet(name="c", path=str(cifar), label_column="class"))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["a", "b", "c"]) + "\n")
    with pytest.raises(ValueError, match="labels range 0..9 but there are 3 class names"):
        load_labelled(ZeroShotSet(name="c", path=str(cifar), classnames=str(names)), max_images=20)


def test_imagefolder_tree(cifar, tmp_path):
    table = pq.read_table(str(cifar), columns=["label_name", "jpeg"]).slice(0, 10000).to_pandas()
    root = tmp_path / "tree"
    for name in ("airplane", "sea_ship", "truck"):
        (root / name).mkdir(parents=True)
        src = "ship" if name == "sea_ship" else name
        for i, jpeg in enumerate(table[table.label_name == src].jpeg.head(4)):
            (root / name / f"{i}.jpg").write_bytes(jpeg)
    (root / "truck" / "README.txt").write_text("not an image")
    data = load_labelled(ZeroShotSet(name="tree", format="imagefolder", path=str(root)))
    assert data.classnames == ["airplane", "sea ship", "truck"]
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.counts["files_not_images"] == 1
    paths = [p for batch in data.image_batches(5) for p in batch]
    assert len(paths) == 12 and paths[4].endswith("sea_ship/0.jpg")
    with pytest.raises(ValueError, match="3 class folders .* but 1000 class names"):
        load_labelled(ZeroShotSet(name="tree", format="imagenet", path=str(root)))


def test_class_names_and_templates_files(tmp_path):
    assert len(read_classnames("imagenet")) == 1000
    (tmp_path / "c.json").write_text(json.dumps({"1": "dog", "0": "cat"}))
    assert read_classnames(str(tmp_path / "c.json")) == ["cat", "dog"]
    (tmp_path / "bad.txt").write_text("cat\n\ndog\n")
    with pytest.raises(ValueError, match=r"empty name at line\(s\) \[1\]"):
        read_classnames(str(tmp_path / "bad.txt"))
    assert len(load_templates("openai")) == 80 and len(load_templates("simple")) == 7
    (tmp_path / "t.txt").write_text("a photo of a {}.\n\na drawing of a {c}.\n")
    assert [t("cat") for t in load_templates(str(tmp_path / "t.txt"))] == ["a photo of a cat.", "a drawing of a cat."]
    (tmp_path / "t2.txt").write_text("a photo\n")
    with pytest.raises(ValueError, match="placeholder"):
        load_templates(str(tmp_path / "t2.txt"))


def test_open_image_errors_name_the_problem():
    with pytest.raises(ValueError, match="null"):
        open_image(None)
    with pytest.raises(Exception, match="cannot identify image"):
        open_image(b"not a jpeg")
    buf = io.BytesIO()
    Image.new("L", (5, 4)).save(buf, format="PNG")
    assert open_image(buf.getvalue()).mode == "RGB"


def test_eval_config_resolves_relative_paths_and_refuses_clashing_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(REPO / "conf" / "local.yaml"))
    assert cfg.eval.retrieval[0].path == str(tmp_path.parent / "shared" / "data" / "coco-mini" / "captions.json")
    assert cfg.eval.zeroshot[0].templates == "openai"
    assert cfg.eval.model_spec == "models:/veclip-clip@candidate"
    assert load_config(None, ["eval.model=@champion"]).eval.model_spec == "models:/veclip-clip@champion"
    with pytest.raises(ConfigError, match="must be unique.*: a"):
        load_config(None, ["eval.retrieval=[{name: a, path: x.json}]", "eval.zeroshot=[{name: a, path: y}]"])
