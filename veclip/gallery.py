"""An HTML page of samples a person can read: thumbnail, AltText, caption, VeCap.

    path = write_gallery(rows, "work/gallery/index.html", title="VeCLIP samples", note="...")

`rows` are dicts with `key`, `image` (bytes), `alt_text`, `caption`, `vecap` and optionally
`fallback_used`. Images are embedded (base64 JPEG thumbnails), so the file stands alone: open it in a
browser, or from the MLflow run's artifacts.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Iterable, Optional

from PIL import Image, ImageOps

THUMB = 192


def thumbnail_data_uri(data: bytes, size: int = THUMB) -> str:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a broken image shows as a blank cell, not a broken page
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _cell(label: str, text: Optional[str], css: str = "") -> str:
    body = html.escape(text) if text else '<span class="none">—</span>'
    return f'<div class="t {css}"><b>{label}</b> {body}</div>'


def render(rows: Iterable[dict], title: str, note: Optional[str] = None) -> str:
    cards = []
    for r in rows:
        uri = thumbnail_data_uri(r["image"]) if r.get("image") else ""
        img = f'<img src="{uri}" alt="{html.escape(r["key"])}">' if uri else '<div class="noimg">no image</div>'
        flag = ' <span class="flag">fallback</span>' if r.get("fallback_used") else ""
        cards.append(
            f'<div class="card">{img}<div class="key">{html.escape(r["key"])}{flag}</div>'
            + _cell("AltText", r.get("alt_text"), "alt") + _cell("Caption", r.get("caption"), "cap")
            + _cell("VeCap", r.get("vecap"), "vecap") + "</div>")
    banner = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:16px}}
.card{{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px}}
.card img{{max-width:100%;max-height:{THUMB}px;display:block;margin:0 auto 8px}}
.key{{font-family:monospace;font-size:11px;color:#888;margin-bottom:6px}}
.t{{font-size:13px;margin:4px 0}} .t b{{display:inline-block;width:64px;color:#555}}
.vecap{{background:#eef6ee;padding:4px;border-radius:4px}} .none{{color:#bbb}}
.note{{background:#fff3cd;border:1px solid #e0c36b;padding:8px 12px;border-radius:6px}}
.flag{{background:#f8d7da;color:#842029;padding:0 4px;border-radius:3px}}
.noimg{{height:120px;background:#eee;display:flex;align-items:center;justify-content:center}}
</style></head><body><h1>{html.escape(title)}</h1>{banner}<div class="grid">{"".join(cards)}</div></body></html>
"""


def write_gallery(rows: Iterable[dict], path: str, title: str, note: Optional[str] = None) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(rows, title, note))
    return path
