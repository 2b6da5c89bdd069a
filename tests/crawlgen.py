"""Generate crawls full of broken and unusual samples, from real CC12M images, and serve them over HTTP.

    imgs = real_images(cc12m_shard)                   # [(url, alt_text, jpeg bytes)] from the real shard
    unusual_images(imgs[0][2])                        # {name: bytes}: RGBA, CMYK, 16-bit, GIF, WebP, ...
    bad_images(imgs[0][2])                            # {reason: bytes}: the rejection each must get
    write_shard(path, [("000001", {"jpg": b, "txt": b"...", "json": b"{...}"}), ...])
    with ImageServer({"a.jpg": b}) as srv: srv.url("/img/a.jpg")

Used by tests/test_ingest*.py. The HTTP server binds 127.0.0.1 on a free port, answers from memory,
and shuts itself down after `lifetime_s` even when a test forgets to.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from PIL import Image


# -- images ------------------------------------------------------------------------------------------
def real_images(shard_path) -> list[tuple[str, str, bytes]]:
    """(url, alt text, jpeg bytes) of every sample of a real img2dataset shard, in order."""
    by_key: dict[str, dict] = {}
    with tarfile.open(shard_path) as tf:
        for m in tf.getmembers():
            key, _, ext = m.name.partition(".")
            by_key.setdefault(key, {})[ext] = tf.extractfile(m).read()
    out = []
    for key in sorted(by_key):
        parts = by_key[key]
        out.append((json.loads(parts["json"])["url"], parts["txt"].decode("utf-8"), parts["jpg"]))
    return out


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def unusual_images(jpeg: bytes) -> dict[str, bytes]:
    """Valid but unusual encodings of a real photo: each must be accepted. Name -> bytes."""
    photo = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((96, 64))
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    frames = [photo.rotate(a).quantize(64) for a in (0, 90, 180)]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW when displayed
    gray16 = Image.fromarray(__import__("numpy").asarray(photo.convert("L"), dtype="uint16") * 257)
    return {
        "rgba.png": _encode(rgba, "PNG"),
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG"),
        "gray16.png": _encode(gray16, "PNG"),
        "palette.gif": _encode(photo.quantize(32), "GIF"),
        "animated.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "photo.webp": _encode(photo, "WEBP", quality=80),
        "exif_rotated.jpg": _encode(photo, "JPEG", exif=exif.tobytes()),
        "grayscale.jpg": _encode(photo.convert("L"), "JPEG"),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data holds a few rows: a decompression bomb
    must be refused from the header, so the missing data is never noticed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def bad_images(jpeg: bytes) -> dict[str, bytes]:
    """Broken images derived from a real JPEG. Name -> bytes; the name starts with the expected reason."""
    photo = Image.open(io.BytesIO(jpeg)).convert("RGB")
    png = _encode(photo.resize((64, 64)), "PNG")
    idat = png.index(b"IDAT") + 4
    corrupt_png = png[:idat + 10] + bytes(b ^ 0x5A for b in png[idat + 10:idat + 400]) + png[idat + 400:]
    return {
        "zero_bytes": b"",
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_webp": _encode(photo.resize((64, 64)), "WEBP")[:300],
        "not_an_image_html": b"<!doctype html><html><body>404 not found</body></html>",
        "not_an_image_svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
        "too_small": _encode(photo.resize((16, 200)), "JPEG"),
        "too_many_pixels_10k": png_header_only(10_000, 10_000),     # above max_pixels, under Pillow's guard
        "too_many_pixels_60k": png_header_only(60_000, 60_000),     # above Pillow's own guard too
        "corrupt_png": corrupt_png,
        "truncated_png_header": png[:30],
        "corrupt_jpeg_header": jpeg[:3] + b"\x00" * 40 + jpeg[-2:],
    }


# -- files -------------------------------------------------------------------------------------------
def write_shard(path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A webdataset tar: members `{key}.{ext}` in the given order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 1_700_000_000
                tf.addfile(info, io.BytesIO(data))


def member_offsets(path) -> dict[str, tuple[int, int]]:
    """Member name -> (header offset, data offset) of a tar file."""
    with tarfile.open(path) as tf:
        return {m.name: (m.offset, m.offset_data) for m in tf.getmembers()}


def cut_file(src, dst, at: int) -> None:
    with open(src, "rb") as f:
        data = f.read()[:at]
    with open(dst, "wb") as f:
        f.write(data)


def garble(src, dst, at: int, n: int = 512) -> None:
    """Copy `src` with `n` bytes of garbage written over it at offset `at`."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    data[at:at + n] = bytes((i * 37 + 11) % 251 + 1 for i in range(n))
    with open(dst, "wb") as f:
        f.write(bytes(data))


# -- HTTP --------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: "ImageServer"

    def log_message(self, *args) -> None:  # keep test output readable
        pass

    def _send(self, status: int, body: bytes, ctype: str = "image/jpeg", length: Optional[int] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv, path = self.server, self.path
        srv.hits[path] = srv.hits.get(path, 0) + 1
        name = path.rsplit("/", 1)[-1]
        try:
            if path.startswith("/img/") and name in srv.images:
                time.sleep(srv.latency_s)
                return self._send(200, srv.images[name])
            if path.startswith("/status/"):
                return self._send(int(name), b"error page", "text/plain")
            if path.startswith("/flaky/"):  # two 503s, then the image
                if srv.hits[path] <= 2:
                    return self._send(503, b"busy", "text/plain")
                return self._send(200, srv.images[name])
            if path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", f"/img/{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if path == "/slow":
                time.sleep(srv.slow_s)
                return self._send(200, next(iter(srv.images.values())))
            if path == "/drip":  # headers at once, then a byte every 0.2 s for a long time
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
                return None
            if path == "/big":  # says it is huge
                return self._send(200, b"", length=10 ** 9)
            if path == "/big-chunked":  # no Content-Length, grows past the limit
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"\xff" * 65536
                for _ in range(srv.big_blocks):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
                return None
            if path == "/cut":  # promises 10000 bytes, sends 100, hangs up
                self._send(200, b"\xff\xd8\xff" + b"\0" * 97, length=10000)
                self.close_connection = True
                return None
            if path == "/html":
                return self._send(200, b"<html><body>not an image</body></html>", "text/html; charset=utf-8")
            return self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, too large): fine
            return None


class ImageServer(ThreadingHTTPServer):
    """A local HTTP server with image, error, slow, oversized and redirect endpoints (see _Handler)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128   # the default backlog (5) drops connections of concurrent downloads

    def __init__(self, images: dict[str, bytes], slow_s: float = 5.0, big_blocks: int = 64, lifetime_s: float = 600,
                 latency_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.images, self.slow_s, self.big_blocks, self.latency_s = images, slow_s, big_blocks, latency_s
        self.hits: dict[str, int] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.shutdown)
        self._timer.daemon = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def __enter__(self) -> "ImageServer":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.shutdown()
        self.server_close()
