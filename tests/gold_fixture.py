"""Gold tables for training tests and benchmarks, written from real images (no upstream stages needed).

    rows = coco_rows(shared_path("coco-mini"))              # 159 COCO images, real human captions
    version = write_gold(spark, Tables(cfg, spark).location("gold"), rows, files=4)

COCO has 5 human captions per image: the 1st plays the AltText, the 2nd the VLM caption and the 3rd
the VeCap; every 5th image has no VeCap (as when the rewriter failed), so the fallback is exercised.
Images are re-encoded as JPEG with the longest side bounded (as the gold stage does).
"""

from __future__ import annotations

import io
import json
import pathlib
from typing import Optional

from PIL import Image

from veclip.schemas import GOLD


def bounded_jpeg(data: bytes, max_side: int, quality: int = 90) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def gold_row(key: str, image: bytes, alt_text: Optional[str], caption: Optional[str],
             vecap: Optional[str]) -> dict:
    return {"key": key, "image": image, "alt_text": alt_text, "caption": caption, "vecap": vecap,
            "captioner": "coco-human", "rewriter": "coco-human" if vecap else None,
            "silver_version": 0, "captions_version": 0, "vecap_version": 0}


def coco_rows(folder: pathlib.Path, max_side: int = 128, no_vecap_every: int = 5,
              limit: Optional[int] = None) -> list[dict]:
    meta = json.loads((folder / "captions.json").read_text())
    captions: dict[int, list[str]] = {}
    for a in meta["annotations"]:
        captions.setdefault(a["image_id"], []).append(a["caption"].strip())
    rows = []
    for i, img in enumerate(sorted(meta["images"], key=lambda m: m["id"])[:limit]):
        caps = captions[img["id"]]
        data = bounded_jpeg((folder / "images" / img["file_name"]).read_bytes(), max_side)
        vecap = None if i % no_vecap_every == no_vecap_every - 1 else caps[2]
        rows.append(gold_row(f"coco-{img['id']}", data, caps[0], caps[1], vecap))
    return rows


def cifar_rows(parquet: pathlib.Path, limit: int = 2000) -> list[dict]:
    """CIFAR-10 test images (32x32 JPEG) with templated texts: many rows for throughput benchmarks."""
    import pyarrow.parquet as pq

    t = pq.read_table(parquet, columns=["key", "label_name", "jpeg"]).slice(0, limit).to_pylist()
    return [gold_row(f"cifar-{r['key']}", r["jpeg"], f"{r['label_name']}",
                     f"a small photo of a {r['label_name']}", f"a blurry photo of a {r['label_name']}")
            for r in t]


def write_gold(spark, location: str, rows: list[dict], files: int = 4, mode: str = "errorifexists") -> int:
    """Write (or append) rows as a Delta table of plain Parquet files; returns the new version."""
    from delta.tables import DeltaTable

    df = spark.createDataFrame(rows, schema=GOLD).repartition(files)
    df.write.format("delta").mode(mode).save(location)
    return int(DeltaTable.forPath(spark, location).history(1).select("version").first()[0])
