"""A noisy web crawl of real images, as img2dataset shards, and held-out evaluation sets.

    python -m veclip.demo.crawl OUT_DIR --n 300 --relevant 0.3 --seed 0      # shards + manifest.parquet
    python -m veclip.demo.crawl OUT_DIR --eval --n 1000                      # evaluation sets of the test part

    info = build_crawl("/tmp/crawl", n=300, relevant=0.3, seed=0)          # cached: same settings, no work
    sets = write_eval_sets("/tmp/eval", n=1000)                              # {"zeroshot": [...], "retrieval": [...]}

The images come from the "crawl" part of the demo datasets (veclip.demo.sources: Fashion-MNIST, and
CIFAR-10 where ../shared/data has it), disjoint from the images the demo captioner was trained on
and from the held-out "test" part. Each is upscaled to `image_side` pixels (ingest refuses sides
under 32) and JPEG-encoded. The AltTexts behave like web AltTexts: most say nothing about what the
image shows (shop names, SKUs, SEO phrases, camera file names and, where ../shared/data/web-alttext
is present, real web AltTexts); exactly round(relevant * n) of the originals name the object, often
by a synonym or a brand ("Nike runners" for a sneaker, "pickup truck for sale" for a truck). A few
exact duplicates (same bytes, another URL), re-encoded and resized near-duplicates and broken files
(a truncated JPEG, an HTML error page) go in too, so dedupe and quarantine have work.

Written: `crawl-NNNNN.tar` shards (`{id}.jpg`, `{id}.txt`, `{id}.json` with url, key, status, width,
height, as img2dataset writes them), `manifest.parquet` (one row per sample: the ingest key, dataset,
label, class name, ground-truth caption from veclip.demo.describe, relevant flag, kind =
original / duplicate / near_duplicate / broken) and `crawl.json` (the settings; a rerun with the same
settings returns at once). Everything is a function of the settings and the seed.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import tarfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from veclip.files import shared_data_dir
from veclip.ingest import sample_key

log = logging.getLogger(__name__)

WEB_ALTTEXT = str(shared_data_dir() / "web-alttext" / "alttext-10k.parquet")
CRAWL_VERSION = 1      # bump when the generator changes, so cached crawls are rebuilt
EVAL_VERSION = 2       # bump when the evaluation sets change (2: one image per distinct description)

# How web pages name each class: synonyms, brands and product names (lower-case class name -> names).
NAMES = {
    "t-shirt": ["t-shirt", "tee", "Uniqlo crew neck tee", "H&M basic top", "graphic tee", "tank top"],
    "trouser": ["trousers", "pants", "Levi's 501 jeans", "chinos", "slacks", "Dockers khakis"],
    "pullover": ["pullover", "sweater", "jumper", "knit sweater", "Gap crewneck sweatshirt", "hoodie"],
    "dress": ["dress", "summer dress", "Zara midi dress", "maxi dress", "evening gown", "sundress"],
    "coat": ["coat", "winter coat", "parka", "North Face jacket", "trench coat", "overcoat"],
    "sandal": ["sandals", "Birkenstock Arizona", "flip flops", "summer sandals", "Teva sandals", "slides"],
    "shirt": ["shirt", "button-down shirt", "Ralph Lauren oxford shirt", "flannel shirt", "dress shirt", "blouse"],
    "sneaker": ["sneakers", "Nike runners", "Adidas trainers", "Converse All Star", "running shoes", "Vans"],
    "bag": ["bag", "handbag", "Michael Kors tote", "backpack", "leather purse", "shoulder bag"],
    "ankle boot": ["ankle boots", "Dr. Martens boots", "Chelsea boots", "booties", "leather boots", "UGG boots"],
    "airplane": ["airplane", "Boeing 737", "jet airliner", "Cessna 172", "aircraft", "Airbus A320"],
    "automobile": ["car", "Toyota Corolla", "used Honda Civic", "sedan", "sports car", "VW Golf"],
    "bird": ["bird", "sparrow", "robin", "songbird", "blue jay", "finch"],
    "cat": ["cat", "kitten", "tabby cat", "Maine Coon", "kitty", "Siamese cat"],
    "deer": ["deer", "white-tailed deer", "fawn", "stag", "elk", "roe deer"],
    "dog": ["dog", "puppy", "golden retriever", "beagle", "German shepherd", "labrador"],
    "frog": ["frog", "tree frog", "toad", "bullfrog", "green frog", "amphibian"],
    "horse": ["horse", "stallion", "pony", "mare", "thoroughbred", "Arabian horse"],
    "ship": ["ship", "cruise ship", "container vessel", "sailboat", "ferry", "cargo ship"],
    "truck": ["truck", "Ford F-150", "pickup truck", "semi truck", "dump truck", "Chevy Silverado"],
}
RELEVANT_TEMPLATES = ["{name}", "{name} for sale", "Buy {name} online | {shop}", "{shop} - {name}",
                      "my new {name}!", "{name}, free shipping", "cheap {name} {sku}", "vintage {name}",
                      "{name} in great condition", "photo of my {name}", "{name} wallpaper HD",
                      "best {name} deals 2024"]
SHOPS = ["Bella's Boutique", "Main Street Outlet", "ShopRite Deals", "Urban Closet", "MegaMart Online",
         "The Corner Store", "BestPrice24", "Northwind Traders", "Sunny Side Market", "Vintage Finds Co.",
         "Harbor Auto Sales", "Wildlife Photo Archive", "Pet Lovers Club", "Sky High Aviation Shop"]
SEO = ["best deals 2024 free shipping worldwide", "click here to see more", "cheap wholesale discount top quality",
       "new arrival hot sale", "limited offer - buy now", "official store | fast delivery",
       "top rated products of the year", "shop the look", "as seen on TV", "customer favourite, 5 stars"]
GENERIC = ["image", "thumbnail", "banner", "logo", "photo", "picture", "untitled-1", "product image",
           "main image", "slide 3"]
FILE_STEMS = ["IMG_{n:04d}.jpg", "DSC{n:05d}.JPG", "photo ({k}).png", "image-{n}.jpeg", "P{n:07d}.jpg",
              "screenshot_{n}.png", "product-img-{n:04d}.jpg"]
_UNSAFE = re.compile(r"\b(?:sex|porn|xxx|nude|naked|boobs?|orgy|fuck|dick|pussy|erotic|escort|milf|hentai|"
                     r"anal|busty|horny)\w*", re.I)
HTML_404 = b"<!doctype html><html><head><title>404 Not Found</title></head><body>Not Found</body></html>"


@dataclass(frozen=True)
class CrawlSettings:
    n: int = 300                       # distinct images (originals)
    relevant: float = 0.3              # share of originals whose AltText names the object
    seed: int = 0
    datasets: tuple[str, ...] = ()     # () = every dataset veclip.demo.sources has
    image_side: int = 64
    duplicates: float = 0.04           # exact copies, as a share of n
    near_duplicates: float = 0.04      # re-encoded and resized copies
    broken: float = 0.02               # truncated JPEGs and HTML pages
    shard_size: int = 100
    version: int = CRAWL_VERSION


# -- texts --------------------------------------------------------------------------------------------
def web_alttexts(path: str = WEB_ALTTEXT) -> list[str]:
    """Real web AltTexts (short, mostly ASCII, no adult words), or [] when the file is absent."""
    if not os.path.isfile(path):
        log.info("no real web AltTexts at %s: only synthetic noise AltTexts", path)
        return []
    texts = pd.read_parquet(path, columns=["TEXT"])["TEXT"].dropna().astype(str).str.strip()
    ok = texts[(texts.str.len().between(3, 100)) & texts.map(lambda t: t.isascii())
               & ~texts.str.contains(_UNSAFE)]
    return ok.tolist()


def _sku(rng: np.random.Generator) -> str:
    letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ"), 2))
    return rng.choice([f"SKU {rng.integers(10000, 99999)}-{letters}", f"item #{letters}{rng.integers(1000, 9999)}",
                       f"{letters}-{rng.integers(100, 999)}-{rng.integers(10, 99)}",
                       f"art. {rng.integers(10**6, 10**7)}"])


def _file_name(rng: np.random.Generator) -> str:
    return str(rng.choice(FILE_STEMS)).format(n=int(rng.integers(1, 10**4)), k=int(rng.integers(1, 20)))


def noise_alt(rng: np.random.Generator, web: Sequence[str]) -> str:
    """An AltText that says nothing about the image."""
    kind = rng.choice(["web", "shop", "sku", "seo", "file", "generic", "combo"],
                      p=[0.4, 0.12, 0.12, 0.1, 0.14, 0.04, 0.08] if web else [0, 0.2, 0.2, 0.17, 0.23, 0.07, 0.13])
    if kind == "web":
        return str(web[rng.integers(len(web))])
    if kind == "shop":
        return str(rng.choice(SHOPS))
    if kind == "sku":
        return _sku(rng)
    if kind == "seo":
        return str(rng.choice(SEO))
    if kind == "file":
        return _file_name(rng)
    if kind == "generic":
        return str(rng.choice(GENERIC))
    return f"{rng.choice(SHOPS)} | {_sku(rng)} | {rng.choice(SEO)}"


def relevant_alt(class_name: str, rng: np.random.Generator) -> str:
    """An AltText that names the object, usually by a synonym, brand or product name."""
    names = NAMES.get(class_name.lower(), [class_name])
    return str(rng.choice(RELEVANT_TEMPLATES)).format(name=rng.choice(names), shop=rng.choice(SHOPS), sku=_sku(rng))


# -- the knowledge probe ------------------------------------------------------------------------------
def words(text: str) -> set[str]:
    """The lower-case letter/digit runs of `text`; a plural ("boots") counts as its singular ("boot") too."""
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        out.add(w)
        if len(w) > 3 and w.endswith("s"):
            out.add(w[:-1])
        if len(w) > 4 and w.endswith("es"):
            out.add(w[:-2])
    return out


@lru_cache(maxsize=1)
def captioner_words() -> frozenset[str]:
    """Every word the demo captioner can say, as `words` reads it: its tokenizer holds describe()'s
    words for the demo classes and the chat prompt's (veclip.demo.captioner.build_tokenizer)."""
    from veclip.demo import captioner, describe, sources

    classes = [c for d in sources.DATASETS for c in sources.class_names(d)]
    return frozenset(words(" ".join(sorted(describe.vocabulary(classes))) + " " + captioner.PROMPT_WORDS))


def held_out(name: str, said: frozenset[str], class_words: frozenset[str]) -> bool:
    """True when `name` shares no word with `said` and no word of it holds a class word ("handbag" holds
    "bag": CLIP's sub-word tokenizer would see the class in it)."""
    mine = words(name)
    return not mine & said and not any(c in w for w in mine for c in class_words)


@lru_cache(maxsize=1)
def probe_names() -> dict[str, tuple[str, ...]]:
    """The knowledge probe (lower-case class name -> names): the names of NAMES that are `held_out` of
    what the demo captioner can say ("Nike runners", "Maine Coon"; not "running shoes", "tabby cat" nor
    "handbag"); a class may have none ("ankle boot"). By construction only the crawl's relevant AltTexts
    hold them: a CLIP model can match them to images only if AltText words reached its training texts.
    The crawl itself is unchanged by the probe (it picks from NAMES as before)."""
    from veclip.demo import sources

    said = captioner_words()
    class_words = frozenset(w for d in sources.DATASETS for c in sources.class_names(d) for w in words(c)
                            if len(w) >= 3)
    return {c: tuple(n for n in names if held_out(n, said, class_words)) for c, names in NAMES.items()}


def probe_mentions(text: Optional[str], class_name: str) -> list[str]:
    """The probe names of `class_name` that `text` holds (case-insensitive, whole words)."""
    from veclip.demo.captioner import mentions

    low = (text or "").lower()
    return [n for n in probe_names().get(class_name.lower(), ()) if mentions(low, n.lower())]


# -- images -------------------------------------------------------------------------------------------
def to_jpeg(image: np.ndarray, side: int, quality: int = 90) -> bytes:
    """An H x W x 3 uint8 array, resized to side x side (bicubic), as JPEG bytes."""
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    if img.size != (side, side):
        img = img.resize((side, side), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _near_copy(jpeg: bytes, rng: np.random.Generator) -> bytes:
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    side = int(rng.choice([48, 56, 72, 80]))
    buf = io.BytesIO()
    img.resize((side, side), Image.BILINEAR).save(buf, "JPEG", quality=int(rng.integers(55, 80)))
    return buf.getvalue()


# -- the crawl ----------------------------------------------------------------------------------------
def _available_datasets(asked: Sequence[str]) -> list[str]:
    from veclip.demo import sources

    if asked:
        return list(asked)
    found = [d for d in sources.DATASETS if sources.available(d)]
    if not found:
        sources.load(sources.DATASETS[0], "crawl", limit=1)   # raises, saying how to install it
    return found


def _originals(s: CrawlSettings, rng: np.random.Generator) -> list[dict]:
    """n images from the crawl parts, split evenly over the datasets, with their ground truth."""
    from veclip.demo import describe, sources

    names = _available_datasets(s.datasets)
    per = [s.n // len(names) + (i < s.n % len(names)) for i in range(len(names))]
    rows = []
    for name, count in zip(names, per):
        split = sources.load(name, "crawl", limit=max(4 * count, 1000))
        if len(split.labels) < count:
            raise ValueError(f"crawl: the '{name}' crawl part has {len(split.labels)} images, {count} asked")
        picked = np.sort(rng.choice(len(split.labels), count, replace=False))
        classes = [split.class_names[int(split.labels[i])] for i in picked]
        for i, cls, caption in zip(picked, classes, describe.describe_batch(classes, split.images[picked])):
            rows.append({"dataset": name, "source_key": str(split.keys[i]), "label": int(split.labels[i]),
                         "class_name": cls, "caption": caption, "jpeg": to_jpeg(split.images[i], s.image_side)})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _assign_texts(rows: list[dict], s: CrawlSettings, rng: np.random.Generator, web: Sequence[str]) -> None:
    relevant = np.zeros(len(rows), bool)
    relevant[rng.choice(len(rows), int(round(s.relevant * len(rows))), replace=False)] = True
    for row, rel in zip(rows, relevant):
        row["relevant"] = bool(rel)
        row["alt_text"] = relevant_alt(row["class_name"], rng) if rel else noise_alt(rng, web)


def _extras(rows: list[dict], s: CrawlSettings, rng: np.random.Generator, web: Sequence[str]) -> list[dict]:
    """Exact duplicates, near-duplicates and broken files, each a copy of a random original."""
    out = []
    for kind, share in (("duplicate", s.duplicates), ("near_duplicate", s.near_duplicates), ("broken", s.broken)):
        count = int(round(share * len(rows))) if share > 0 else 0
        count = max(count, 1) if share > 0 and len(rows) >= 10 else count
        for i in rng.choice(len(rows), count, replace=False):
            src = rows[i]
            copy = dict(src, kind=kind, duplicate_of=src["key"], relevant=False, alt_text=noise_alt(rng, web))
            if kind == "near_duplicate":
                copy["jpeg"] = _near_copy(src["jpeg"], rng)
            elif kind == "broken":
                copy["jpeg"] = src["jpeg"][: len(src["jpeg"]) // 2] if rng.random() < 0.5 else HTML_404
            out.append(copy)
    return out


def _url(i: int, seed: int, rng: np.random.Generator) -> str:
    host = re.sub(r"[^a-z0-9]+", "-", str(rng.choice(SHOPS)).lower()).strip("-")
    return f"https://img.{host}.example/media/s{seed}/{i:06d}.jpg"


def plan_crawl(s: CrawlSettings) -> list[dict]:
    """Every sample of the crawl, in shard order: a pure function of the settings."""
    rng = np.random.default_rng([s.seed, 20231012])
    web = web_alttexts()
    rows = _originals(s, rng)
    _assign_texts(rows, s, rng, web)
    for i, row in enumerate(rows):
        row.update(kind="original", duplicate_of=None, url=_url(i, s.seed, rng))
        row["key"] = sample_key(row["url"])
    extras = _extras(rows, s, rng, web)
    for j, row in enumerate(extras):
        row["url"] = _url(len(rows) + j, s.seed, rng)
        row["key"] = sample_key(row["url"])
    everything = rows + extras
    return [everything[i] for i in rng.permutation(len(everything))]


def _image_size(jpeg: bytes) -> tuple[Optional[int], Optional[int]]:
    try:
        return Image.open(io.BytesIO(jpeg)).size
    except Exception:  # noqa: BLE001 - a broken file has no size, as img2dataset would record
        return None, None


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_700_000_000
    tf.addfile(info, io.BytesIO(data))


def write_shards(samples: list[dict], out_dir: str, shard_size: int) -> list[str]:
    """img2dataset's webdataset layout; sets each sample's `shard` and `shard_key`."""
    paths = []
    for start in range(0, len(samples), shard_size):
        path = os.path.join(out_dir, f"crawl-{start // shard_size:05d}.tar")
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
            for i, row in enumerate(samples[start:start + shard_size], start):
                sid = f"{start // shard_size:05d}{i - start:04d}"
                width, height = _image_size(row["jpeg"])
                meta = {"url": row["url"], "key": sid, "status": "success", "error_message": None,
                        "width": width, "height": height, "caption": row["alt_text"]}
                _add(tf, f"{sid}.jpg", row["jpeg"])
                _add(tf, f"{sid}.txt", row["alt_text"].encode("utf-8"))
                _add(tf, f"{sid}.json", json.dumps(meta, indent=1).encode("utf-8"))
                row["shard"], row["shard_key"] = os.path.basename(path), sid
        paths.append(path)
    return paths


MANIFEST_COLUMNS = ["key", "shard", "shard_key", "url", "dataset", "source_key", "label", "class_name", "caption",
                    "alt_text", "relevant", "kind", "duplicate_of"]


def build_crawl(out_dir: str, n: int = 300, relevant: float = 0.3, seed: int = 0, **settings) -> dict:
    """Write the crawl under out_dir (skipped when crawl.json there has the same settings); its summary."""
    s = CrawlSettings(n=n, relevant=relevant, seed=seed, **settings)
    meta_path = os.path.join(out_dir, "crawl.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("settings") == json.loads(json.dumps(asdict(s))):
            log.info("crawl in %s is up to date (%d samples)", out_dir, meta["samples"])
            return meta
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):
        if re.fullmatch(r"crawl-\d{5}\.tar", old):
            os.remove(os.path.join(out_dir, old))
    samples = plan_crawl(s)
    shards = write_shards(samples, out_dir, s.shard_size)
    manifest = pd.DataFrame([{c: r.get(c) for c in MANIFEST_COLUMNS} for r in samples], columns=MANIFEST_COLUMNS)
    manifest.to_parquet(os.path.join(out_dir, "manifest.parquet"), index=False)
    originals = manifest[manifest.kind == "original"]
    meta = {"settings": json.loads(json.dumps(asdict(s))), "samples": len(manifest), "shards": len(shards),
            "inputs": os.path.join(os.path.abspath(out_dir), "crawl-*.tar"),
            "kinds": manifest.kind.value_counts().to_dict(), "datasets": originals.dataset.value_counts().to_dict(),
            "relevant_originals": int(originals.relevant.sum())}
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    log.info("crawl: %d samples in %d shards under %s (%s)", len(manifest), len(shards), out_dir, meta["kinds"])
    return meta


# -- evaluation sets ----------------------------------------------------------------------------------
def write_eval_sets(out_dir: str, n: int = 1000, datasets: Sequence[str] = (), image_side: int = 64) -> dict:
    """The held-out test parts as evaluation sets: per dataset a zero-shot parquet (key, label,
    label_name, jpeg) of the first n test images, and one COCO-captions retrieval set whose captions
    are the describe() ground truth. Many small images share a description ("a grey sneaker on a black
    background"), and identical captions embed identically, so a tie would decide retrieval: the
    retrieval set keeps the first image of each distinct description only. Returns the eval config
    entries {"zeroshot": [...], "retrieval": [...]} and "images" (zero-shot and retrieval images per
    dataset); cached by n."""
    from veclip.demo import describe, sources

    meta_path = os.path.join(out_dir, "eval_sets.json")
    wanted = {"n": n, "datasets": list(datasets), "image_side": image_side, "version": CRAWL_VERSION,
              "eval_version": EVAL_VERSION}
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("wanted") == wanted:
            return meta["sets"]
    images_dir = os.path.join(out_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    names = _available_datasets(datasets)
    zeroshot, coco_images, coco_anns, seen, counts = [], [], [], set(), {}
    for name in names:
        split = sources.load(name, "test", limit=n)
        rows, before = [], len(coco_images)
        captions = describe.describe_batch(split.label_names(), split.images)
        for i in range(len(split.labels)):
            jpeg = to_jpeg(split.images[i], image_side)
            cls = split.class_names[int(split.labels[i])]
            rows.append({"key": str(split.keys[i]), "label": int(split.labels[i]), "label_name": cls, "jpeg": jpeg})
            if captions[i] in seen:
                continue
            seen.add(captions[i])
            file_name = f"{name}-{i:05d}.jpg"
            with open(os.path.join(images_dir, file_name), "wb") as f:
                f.write(jpeg)
            coco_images.append({"id": len(coco_images), "file_name": file_name})
            coco_anns.append({"id": len(coco_anns), "image_id": coco_images[-1]["id"],
                              "caption": captions[i]})
        counts[name] = {"zeroshot": len(rows), "retrieval": len(coco_images) - before}
        path = os.path.join(out_dir, f"{name}-test.parquet")
        pd.DataFrame(rows).to_parquet(path, index=False)
        classes = os.path.join(out_dir, f"{name}-classes.txt")    # every class, even one a small subset lacks
        with open(classes, "w") as f:
            f.write("".join(f"{c}\n" for c in split.class_names))
        zeroshot.append({"name": name, "format": "parquet", "path": os.path.abspath(path),
                         "classnames": os.path.abspath(classes), "templates": "openai"})
    captions = os.path.join(out_dir, "captions.json")
    with open(captions, "w") as f:
        json.dump({"images": coco_images, "annotations": coco_anns}, f)
    sets = {"zeroshot": zeroshot,
            "retrieval": [{"name": "demo-captions", "format": "coco", "path": os.path.abspath(captions),
                           "images_dir": os.path.abspath(images_dir), "captions_per_image": 5}],
            "images": counts}
    with open(meta_path, "w") as f:
        json.dump({"wanted": wanted, "sets": sets}, f, indent=1)
    return sets


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=300, help="distinct images (originals); with --eval: per dataset")
    p.add_argument("--relevant", type=float, default=0.3, help="share of originals with a relevant AltText")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", default="", help="comma-separated (default: every available dataset)")
    p.add_argument("--eval", action="store_true", help="write the evaluation sets of the test parts instead")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    datasets = tuple(d for d in args.datasets.split(",") if d)
    if args.eval:
        print(json.dumps(write_eval_sets(args.out_dir, args.n, datasets), indent=1))
    else:
        print(json.dumps(build_crawl(args.out_dir, args.n, args.relevant, args.seed, datasets=datasets), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
