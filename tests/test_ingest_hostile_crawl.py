"""Issue 15, "Done when": an ingest of a crawl mixing every hostile input with good rows exits 0 and puts
every input row in exactly one of bronze and quarantine, with a reason; `--retry-quarantined` then
moves the rows whose failure has passed.

The crawl is built on disk from the real CC12M shard and its real photos, and `python jobs/ingest.py`
runs it in a subprocess, as a user runs it. It mixes good rows with:
  - a webdataset shard whose `.json` members carry the JSON escape `\\ud800` (caption and URL),
  - a JSONL URL table, a parquet URL table and a VeCap JSON file with lone surrogates,
  - a shard cut in the middle of a member (a half-copied file),
  - URLs on a loopback HTTP server that trickles its headers one byte per 0.4 s, answers 503,
    serves a 9400 x 9400 PNG of a few hundred KB, a 16-bit PNG and good JPEGs,
  - URLs whose host is an IPv6 form embedding 127.0.0.1 (IPv4-compatible, IPv4-translated, NAT64, 6to4).
Every row's fate is written down as the crawl is made, and the Delta tables are compared with it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import deltalake
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.crawlgen import ImageServer, _Handler, cut_file, member_offsets, real_images, unusual_images, write_shard
from tests.test_ingest_cli import _env
from veclip.ingest import sample_key

BAD_JSON = "\\ud800"          # a lone surrogate as a JSON escape, written as such into the files
# Parquet strings are UTF-8 bytes: a lone surrogate can only stand there as its (invalid) WTF-8/CESU-8
# encoding, which is what a writer that does not validate (Java's, or Python's surrogatepass) produces.
BAD_UTF8 = "\ud800".encode("utf-8", "surrogatepass")
FFFD = "\ufffd"
HUGE_SIDE = 9400
# 9400^2 = 88.4 Mpx is under the default ingest.max_pixels (89.5 Mpx, Pillow's own limit): by default
# ingest accepts it and caption/gold bound their decoding memory (tests/test_imaging.py). A crawl that
# wants such files refused at ingest lowers the limit, as README "Failure behaviour" says; this one does.
MAX_PIXELS = 64_000_000
BLOCKED_HOSTS = ("::127.0.0.1", "::ffff:0:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::")


# -- the "web" the crawl points at ------------------------------------------------------------------
class _CrawlHandler(_Handler):
    """crawlgen's endpoints (/img/NAME, /status/N, ...) plus /trickle and /busy/NAME."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv, path = self.server, self.path
        if path == "/trickle":
            srv.hits[path] = srv.hits.get(path, 0) + 1
            return self._trickle()
        if path.startswith("/busy/"):  # 503 while the server is busy, then the image
            srv.hits[path] = srv.hits.get(path, 0) + 1
            if srv.busy:
                return self._send(503, b"busy", "text/plain")
            return self._send(200, srv.images[path.rsplit("/", 1)[-1]])
        return super().do_GET()

    def _trickle(self) -> None:
        """The response headers one byte every 0.4 s (~25 s in all); records how long the client held on."""
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\n"
        t0 = time.monotonic()
        try:
            for i in range(len(head)):
                self.wfile.write(head[i:i + 1])
                self.wfile.flush()
                time.sleep(0.4)
            self.wfile.write(b"\xff\xd8\xff\xd9")
        except OSError:   # the client hung up: its deadline
            pass
        self.server.trickle_held.append(time.monotonic() - t0)
        self.close_connection = True


class CrawlServer(ImageServer):
    def __init__(self, images: dict[str, bytes], **kw):
        super().__init__(images, **kw)
        self.RequestHandlerClass = _CrawlHandler
        self.busy = True
        self.trickle_held: list[float] = []


def huge_png(jpeg: bytes) -> bytes:
    """A real photo on a flat 9400 x 9400 canvas: a small PNG file of 88 Mpx."""
    canvas = Image.new("RGB", (HUGE_SIDE, HUGE_SIDE), (236, 232, 225))
    canvas.paste(Image.open(io.BytesIO(jpeg)).convert("RGB"), (0, 0))
    buf = io.BytesIO()
    canvas.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


# -- the job, as a user runs it --------------------------------------------------------------------
def _ingest(root, inputs, *sets: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "jobs/ingest.py", "--config", "conf/local.yaml", "--set", f"paths.root={root}",
           "--set", "ingest.inputs=[" + ", ".join(str(p) for p in inputs) + "]",
           "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=2g"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd + list(flags), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


def _accounting(proc: subprocess.CompletedProcess) -> dict:
    """The counts and check lines the job printed."""
    out = proc.stdout
    counts = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^  (\S+)\s+([\d,]+)$", out, re.M)}
    return {"counts": counts, "checks": re.findall(r"^  check (.*)$", out, re.M)}


def _tables(root) -> dict:
    bronze = deltalake.DeltaTable(str(root / "bronze")).to_pandas()
    quarantine = deltalake.DeltaTable(str(root / "quarantine")).to_pandas()
    return {"bronze": bronze, "quarantine": quarantine}


@pytest.fixture(scope="module")
def crawl(cc12m_shard, tmp_path_factory):
    photos = real_images(cc12m_shard)                          # 32 (url, alt text, jpeg)
    tmp = tmp_path_factory.mktemp("hostile-crawl")
    root, crawl_dir = tmp / "root", tmp / "crawl"
    crawl_dir.mkdir()
    images = {f"{i}.jpg": p[2] for i, p in enumerate(photos)}
    images["huge.png"] = huge_png(photos[0][2])
    images["gray16.png"] = unusual_images(photos[20][2])["gray16.png"]
    expected: dict[str, str] = {}       # key -> "bronze" or the quarantine reason, for every input row

    def expect(key: str, fate: str) -> None:
        assert key not in expected, "the crawl must not repeat a key"
        expected[key] = fate

    for url, _, _ in photos:                                   # the real shard as it is: 32 good rows
        expect(sample_key(url), "bronze")

    # A shard with the JSON escape in a caption and in a URL (no .txt: the caption comes from the .json).
    hostile_meta = '{"url": "https://hostile.example/h0.jpg", "caption": "caption ' + BAD_JSON + ' escaped"}'
    write_shard(crawl_dir / "hostile.tar", [
        ("h0", {"jpg": photos[0][2], "json": hostile_meta.encode()}),
        ("h1", {"jpg": photos[1][2], "txt": b"fine", "json": ('{"url": "https://hostile.example/' + BAD_JSON
                                                                + '.jpg"}').encode()})])
    expect(sample_key("https://hostile.example/h0.jpg"), "bronze")
    expect(sample_key(f"https://hostile.example/{FFFD}.jpg"), "bronze")

    # A shard of 6 samples, half-copied: cut 500 bytes into the image of sample 3 (before its .json).
    full = tmp / "full.tar"
    write_shard(full, [(f"{i:06d}", {"jpg": photos[2 + i][2], "txt": photos[2 + i][1].encode(),
                                     "json": json.dumps({"url": f"https://cut.example/{i}.jpg"}).encode()})
                       for i in range(6)])
    offsets = member_offsets(full)
    cut = crawl_dir / "cut.tar"
    cut_file(full, cut, offsets["000003.jpg"][1] + 500)
    for i in range(3):
        expect(sample_key(f"https://cut.example/{i}.jpg"), "bronze")
    expect(sample_key(None, str(cut), "000003"), "truncated")                       # keyed by shard and id
    expect(sample_key(None, str(cut), f"@{offsets['000003.jpg'][0]}"), "truncated_shard")   # the lost rest

    with CrawlServer(images, lifetime_s=600) as srv:
        url = srv.url
        # JSONL URL table: surrogate in a caption and in a URL, and every kind of server.
        jsonl = [(url("/img/8.jpg"), "jsonl " + BAD_JSON, "bronze"),
                 (url("/img/9.jpg"), photos[9][1], "bronze"),
                 (url("/img/10.jpg") + BAD_JSON, "surrogate in the URL", "http_404"),
                 (url("/trickle"), "trickled headers", "timeout"),
                 (url("/busy/11.jpg"), "busy server", "http_503"),
                 (url("/img/huge.png"), "small file, huge pixels", "too_many_pixels"),
                 (url("/img/gray16.png"), "16-bit grey", "bronze")]
        (crawl_dir / "urls.jsonl").write_text("".join(
            '{"url": "' + u + '", "caption": ' + json.dumps(c).replace("\\\\ud800", BAD_JSON) + "}\n"
            for u, c, _ in jsonl))
        for u, _, fate in jsonl:
            expect(sample_key(u.replace(BAD_JSON, FFFD)), fate)
        # Parquet URL table (no image column): the surrogate's bytes in a caption.
        pq.write_table(pa.table({"url": [url("/img/12.jpg"), url("/img/13.jpg")],
                                 "caption": pa.array([b"parquet " + BAD_UTF8, b"fine"]).view(pa.string())}),
                       crawl_dir / "urls.parquet")
        expect(sample_key(url("/img/12.jpg")), "bronze")
        expect(sample_key(url("/img/13.jpg")), "bronze")
        # VeCap JSON {url: caption}.
        (crawl_dir / "vecap.json").write_text('{"' + url("/img/14.jpg") + '": "vecap ' + BAD_JSON + '", "'
                                              + url("/img/15.jpg") + '": "fine"}')
        expect(sample_key(url("/img/14.jpg")), "bronze")
        expect(sample_key(url("/img/15.jpg")), "bronze")
        # IPv6 hosts that embed 127.0.0.1 (the server's own port: were one let through, it would answer).
        port = srv.server_address[1]
        blocked = [f"http://[{h}]:{port}/img/{16 + i}.jpg" for i, h in enumerate(BLOCKED_HOSTS)]
        (crawl_dir / "blocked.jsonl").write_text("".join(json.dumps({"url": u, "caption": "x"}) + "\n" for u in blocked))
        for u in blocked:
            expect(sample_key(u), "blocked_address")

        # The address policy is one switch for a whole job, and the loopback server standing in for the
        # web is itself a private address. So the crawl is ingested by two jobs on one root, each under
        # a real policy and nothing test-only: (1) the production default, allow_private=false, reads
        # blocked.jsonl and must refuse every embedded-IPv4 form *before connecting*; (2) the whole crawl
        # (blocked.jsonl included, which the ledger then skips as complete) with allow_private=true so
        # the loopback server is reachable. The exactly-once checks are made on the tables after both.
        http = ["ingest.http.deadline_s=2", "ingest.http.retries=0", f"ingest.max_pixels={MAX_PIXELS}"]
        strict = _ingest(root, [crawl_dir / "blocked.jsonl"], *http, "ingest.http.allow_private=false")
        after_strict = _tables(root) if strict.returncode == 0 else None
        everything = [cc12m_shard, crawl_dir / "*"]
        main = _ingest(root, everything, *http, "ingest.http.allow_private=true")
        after_main = _tables(root) if main.returncode == 0 else None
        trickle_held = list(srv.trickle_held)
        hits_main = dict(srv.hits)

        # The transient failures pass: the server answers 200, the rest of the shard arrives.
        srv.busy = False
        os.replace(full, cut)
        retry = _ingest(root, everything, *http, "ingest.http.allow_private=true", flags=("--retry-quarantined",))
        after_retry = _tables(root) if retry.returncode == 0 else None
        hits_retry = dict(srv.hits)

    after = dict(expected)     # the fates once the failures have passed
    after.pop(sample_key(None, str(cut), "000003"))
    after.pop(sample_key(None, str(cut), f"@{offsets['000003.jpg'][0]}"))
    for i in range(3, 6):
        after[sample_key(f"https://cut.example/{i}.jpg")] = "bronze"
    after[sample_key(url("/busy/11.jpg"))] = "bronze"
    return dict(photos=photos, images=images, url=url, cut=cut, expected=expected, after=after,
                strict=strict, main=main, retry=retry, trickle_held=trickle_held,
                hits_main=hits_main, hits_retry=hits_retry,
                after_strict=after_strict, after_main=after_main, after_retry=after_retry)


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    acc = _accounting(proc)
    assert len(acc["checks"]) == 3 and all(c.endswith("OK") for c in acc["checks"]), proc.stdout
    assert "MISMATCH" not in proc.stdout


def _exactly_once(tables: dict, expected: dict[str, str]) -> None:
    """Every input row in exactly one of bronze and quarantine, with the expected reason; nothing else."""
    bronze, quarantine = tables["bronze"], tables["quarantine"]
    assert bronze.key.is_unique and quarantine.key.is_unique
    assert not set(bronze.key) & set(quarantine.key)
    assert (quarantine.stage == "ingest").all()
    got = {**{k: "bronze" for k in bronze.key}, **dict(zip(quarantine.key, quarantine.reason))}
    assert len(got) == len(bronze) + len(quarantine) == len(expected)
    missing, extra = set(expected) - set(got), set(got) - set(expected)
    assert not missing and not extra, (missing, extra)
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, wrong
    assert quarantine.reason.str.len().gt(0).all() and quarantine.detail.str.len().gt(0).all()


def _no_surrogates(df) -> None:
    for col in df.columns:
        for v in df[col]:
            if isinstance(v, str):
                v.encode("utf-8")       # raises on a lone surrogate


# -- the checks --------------------------------------------------------------------------------------
def test_default_policy_refuses_ipv6_forms_embedding_loopback(crawl):
    _ok(crawl["strict"])
    c = _accounting(crawl["strict"])["counts"]
    assert (c["read"], c["bronze"], c["quarantine"], c["quarantine.blocked_address"]) == (4, 0, 4, 4)
    q = crawl["after_strict"]["quarantine"]
    assert sorted(q.reason) == ["blocked_address"] * 4 and q.detail.str.contains("not a public address").all()
    assert not any(p.startswith(("/img/16", "/img/17", "/img/18", "/img/19")) for p in crawl["hits_main"])


def test_mixed_crawl_exits_0_and_puts_every_row_once(crawl):
    _ok(crawl["main"])
    c = _accounting(crawl["main"])["counts"]
    assert (c["files"], c["files_skipped"]) == (7, 1)                       # blocked.jsonl: done by the strict run
    assert (c["read"], c["bronze"], c["quarantine"], c["already_present"], c["duplicate_in_input"]) == (50, 44, 6, 0, 0)
    assert {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("quarantine.")} == {
        "truncated": 1, "truncated_shard": 1, "http_404": 1, "timeout": 1, "http_503": 1, "too_many_pixels": 1}
    _exactly_once(crawl["after_main"], crawl["expected"])


def test_lone_surrogates_are_repaired_to_fffd(crawl):
    tables, url = crawl["after_main"], crawl["url"]
    bronze = tables["bronze"].set_index("key")
    for df in tables.values():
        _no_surrogates(df)
    raw = {k: bronze.loc[sample_key(u)].alt_text_raw for k, u in [
        ("webdataset", "https://hostile.example/h0.jpg"), ("jsonl", url("/img/8.jpg")),
        ("parquet", url("/img/12.jpg")), ("vecap", url("/img/14.jpg"))]}
    assert raw == {"webdataset": f"caption {FFFD} escaped", "jsonl": f"jsonl {FFFD}",
                   "parquet": "parquet " + BAD_UTF8.decode("utf-8", "replace"), "vecap": f"vecap {FFFD}"}
    assert bronze.loc[sample_key("https://hostile.example/h0.jpg")].alt_text == "caption escaped"
    assert bronze.loc[sample_key(f"https://hostile.example/{FFFD}.jpg")].url == f"https://hostile.example/{FFFD}.jpg"
    q = tables["quarantine"].set_index("key")
    assert q.loc[sample_key(url("/img/10.jpg") + FFFD)].url == url("/img/10.jpg") + FFFD


def test_trickled_headers_are_cut_at_the_deadline(crawl):
    q = crawl["after_main"]["quarantine"].set_index("key")
    row = q.loc[sample_key(crawl["url"]("/trickle"))]
    assert row.reason == "timeout" and "deadline_s=2" in row.detail, row.detail
    assert crawl["hits_main"]["/trickle"] == 1                               # retries=0
    # the server saw the client hang up ~2 s in (sending all its headers takes ~25 s)
    assert crawl["trickle_held"] and max(crawl["trickle_held"]) < 2 + 3, crawl["trickle_held"]


def test_huge_and_16_bit_pngs(crawl):
    from veclip.imaging import load_rgb

    tables, url, images = crawl["after_main"], crawl["url"], crawl["images"]
    assert len(images["huge.png"]) < 2_000_000
    huge = tables["quarantine"].set_index("key").loc[sample_key(url("/img/huge.png"))]
    assert huge.reason == "too_many_pixels" and f"{HUGE_SIDE}x{HUGE_SIDE}" in huge.detail
    row = tables["bronze"].set_index("key").loc[sample_key(url("/img/gray16.png"))]
    assert row.image == images["gray16.png"] and row.image_format == "PNG" and row.image_mode.startswith("I")
    grey = np.asarray(load_rgb(row.image, 32), dtype=float).mean()
    photo = np.asarray(Image.open(io.BytesIO(crawl["photos"][20][2])).convert("L"), dtype=float).mean()
    assert abs(grey - photo) < 8, (grey, photo)                              # scaled to 8 bits, not white


def test_retry_quarantined_moves_what_recovered(crawl):
    _ok(crawl["retry"])
    c = _accounting(crawl["retry"])["counts"]
    # read again: the cut shard (now whole) and the URL table holding the timeout and the 503
    assert (c["files"], c["files_skipped"]) == (7, 5)
    assert (c["read"], c["bronze"], c["quarantine"], c["already_present"]) == (13, 4, 1, 8)
    assert (c["retried"], c["recovered"]) == (4, 3)
    _exactly_once(crawl["after_retry"], crawl["after"])
    before, after = crawl["hits_main"], crawl["hits_retry"]
    assert after["/busy/11.jpg"] == before["/busy/11.jpg"] + 1 and after["/trickle"] == before["/trickle"] + 1
    # final reasons are not fetched again
    assert after.get("/img/huge.png") == before.get("/img/huge.png") == 1
    assert after.get("/img/10.jpg%EF%BF%BD") == before.get("/img/10.jpg%EF%BF%BD") == 1
