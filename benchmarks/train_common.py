"""Shared set-up of the training benchmarks: a gold table of real COCO images in a scratch root.

    spark, tables, plan, rows = bench_gold(root, copies=4, max_side=256, files=4)

COCO-mini's 159 photos (with their human captions) are repeated `copies` times under new keys, so
a few dozen steps read real JPEGs of realistic size without reusing rows within an epoch.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
COCO = os.path.join(REPO, "..", "shared", "data", "coco-mini")


def bench_gold(root: str, copies: int = 4, max_side: int = 256, files: int = 4, master: str = "local[2]"):
    import pathlib

    from tests.gold_fixture import coco_rows, write_gold
    from veclip.config import load_config
    from veclip.spark import get_spark
    from veclip.tables import Tables
    from veclip.train.data import plan_gold

    if not os.path.isdir(COCO):
        sys.exit(f"real data not found: {COCO} (the benchmark needs ../shared/data/coco-mini)")
    cfg = load_config(os.path.join(REPO, "conf", "local.yaml"),
                      [f"paths.root={root}", f"spark.master={master}", "spark.shuffle_partitions=2"])
    spark = get_spark(cfg)
    tables = Tables(cfg, spark)
    base = coco_rows(pathlib.Path(COCO), max_side=max_side)
    rows = [{**r, "key": f"{r['key']}-{c}"} for c in range(copies) for r in base]
    if not tables.exists("gold"):
        write_gold(spark, tables.location("gold"), rows, files=files)
    return spark, tables, plan_gold(tables), rows


def table(headers: list[str], lines: list[list]) -> str:
    cells = [headers] + [[f"{c:,.2f}" if isinstance(c, float) else str(c) for c in line] for line in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    fmt = lambda row: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]])
