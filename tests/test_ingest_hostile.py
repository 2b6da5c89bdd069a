"""Hostile input without Spark: invalid Unicode in every input format, servers that trickle their
headers, and IPv6 addresses that embed a private IPv4 address.

The task functions are run as Spark runs them (Arrow batches of file ids in, Arrow batches out), so
a sample that would fail the Arrow batch build fails here too.
"""

import io
import json
import socket
import tarfile
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.crawlgen import real_images, write_shard
from veclip.ingest import sample_key
from veclip.config.ingest import HttpConfig, IngestConfig
from veclip.ingest.fetch import check_address, fetch
from veclip.ingest.inputs import expand_inputs
from veclip.ingest.tasks import read_files, read_url_rows

BAD = "\ud800"                     # a lone surrogate: what the JSON escape "\ud800" decodes to
BAD_JSON = "\\ud800"               # the escape as it stands in a JSON file
OPTS = IngestConfig(http=HttpConfig(timeout_s=1.0, retries=0, allow_private=True))


@pytest.fixture(scope="module")
def photos(cc12m_shard):
    return real_images(cc12m_shard)


def _run_task(task, files):
    """Run the task function made for `files` as mapInArrow does; return its rows as dicts."""
    fn = task(files, OPTS)
    ids = pa.RecordBatch.from_pydict({"id": list(range(len(files)))})
    return [row for batch in fn(iter([ids])) for row in batch.to_pylist()]


def _valid(rows):
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")     # raises on a lone surrogate


# -- invalid Unicode -----------------------------------------------------------------------------------
def test_repair_text_replaces_lone_surrogates_only():
    from veclip.ingest.text import repair_text

    assert repair_text(f"a{BAD}b\udcffc\ud83d\ude00d") == "a\ufffdb\ufffdc\U0001f600d"   # a split pair is joined
    assert repair_text("Café 😀") == "Café 😀" and repair_text(None) is None
    assert repair_text(repair_text(f"x{BAD}")) == repair_text(f"x{BAD}")
    # the key of a URL with a lone surrogate is the key of its repaired form, never an error
    assert sample_key(f"http://a/{BAD}.jpg") == sample_key("http://a/\ufffd.jpg")
    assert sample_key(None, f"/crawl/s{BAD}.tar", f"k{BAD}") == sample_key(None, "/crawl/s\ufffd.tar", "k\ufffd")


def test_lone_surrogates_in_every_input_format_are_repaired(tmp_path, photos):
    url0, url1 = f"http://a.example/{BAD}0.jpg", "http://a.example/1.jpg"
    meta = '{"url": "http://a.example/' + BAD_JSON + '0.jpg", "caption": "cap ' + BAD_JSON + '"}'
    write_shard(tmp_path / "s.tar", [("000000", {"jpg": photos[0][2], "json": meta.encode()}),
                                     ("000001", {"jpg": photos[1][2], "json": json.dumps({"url": url1}).encode(),
                                                 "txt": b"fine"})])
    (tmp_path / "u.jsonl").write_text('{"url": "http://a.example/' + BAD_JSON + '0.jpg", "caption": "t'
                                      + BAD_JSON + '"}\n{"url": "' + url1 + '", "caption": "' + BAD_JSON + '"}\n')
    (tmp_path / "v.json").write_text('{"http://a.example/' + BAD_JSON + '0.jpg": "vecap ' + BAD_JSON
                                     + '", "' + url1 + '": "ok"}')
    pq.write_table(pa.table({"url": pa.array([b"http://a.example/\xff0.jpg", url1.encode()]).view(pa.string()),
                             "caption": ["p", "q"]}), tmp_path / "u.parquet")   # invalid UTF-8 in a parquet string
    pq.write_table(pa.table({"key": ["a", "b"], "url": pa.array([b"http://a.example/\xff0.jpg",
                                                            url1.encode()]).view(pa.string()),
                             "caption": pa.array([b"c\xff", b"d"]).view(pa.string()),
                             "jpg": [photos[2][2], photos[3][2]]}), tmp_path / "img.parquet")
    files = {}
    for f in expand_inputs([str(tmp_path / n) for n in ("s.tar", "u.jsonl", "v.json", "u.parquet", "img.parquet")]):
        files.setdefault(f.format, []).append(f)
    assert sorted(files) == ["parquet", "url_table", "vecap_json", "webdataset"]

    shard_rows = _run_task(read_files, files["webdataset"] + files["parquet"])
    url_rows = _run_task(read_url_rows, files["url_table"] + files["vecap_json"])
    _valid(shard_rows + url_rows)
    # nothing is dropped: 2 samples per file, each accepted or waiting for its download
    assert len(shard_rows) == 4 and all(r["outcome"] == "bronze" for r in shard_rows)
    assert len(url_rows) == 6 and all(r["outcome"] is None for r in url_rows)
    repaired = sample_key("http://a.example/\ufffd0.jpg")
    assert [r["key"] for r in shard_rows].count(repaired) == 2          # webdataset json and image parquet
    assert [r["key"] for r in url_rows].count(repaired) == 3           # jsonl, VeCap JSON, parquet URL table
    by_source = {(r["source_format"], r["url"]): r for r in shard_rows + url_rows}
    assert by_source[("webdataset", "http://a.example/\ufffd0.jpg")]["alt_text_raw"] == "cap \ufffd"
    assert by_source[("vecap_json", "http://a.example/\ufffd0.jpg")]["alt_text_raw"] == "vecap \ufffd"
    assert by_source[("parquet", "http://a.example/\ufffd0.jpg")]["alt_text"] == "c"   # U+FFFD is not kept when cleaned
    assert {r["alt_text_raw"] for r in url_rows if r["url"] == url1} == {"\ufffd", "ok", "q"}


def test_invalid_unicode_in_tar_member_names_and_file_names(tmp_path, photos):
    bad_name = tmp_path / ("shard-" + "\udcff" + ".tar")          # the file name byte 0xff, as os.listdir gives it
    write_shard(bad_name, [("ok", {"jpg": photos[0][2]})])
    with tarfile.open(tmp_path / "names.tar", "w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for name in ("k\udcff.jpg", "good.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(photos[1][2])
            tf.addfile(info, io.BytesIO(photos[1][2]))
    files = expand_inputs([str(tmp_path / "*.tar")])
    rows = _run_task(read_files, files)
    _valid(rows)
    assert sorted(r["source_key"] for r in rows) == ["good", "k\ufffd", "ok"]
    assert all(r["outcome"] == "bronze" for r in rows)
    assert {r["source"] for r in rows} == {str(tmp_path / "names.tar"), str(tmp_path / "shard-\ufffd.tar")}


# -- one deadline over DNS, connect, headers and body ------------------------------------------------
class TrickleServer:
    """A loopback server that answers every connection with its response headers one byte at a time."""

    def __init__(self, delay_s: float = 0.4, lifetime_s: float = 60):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.delay_s, self.connections, self.closed = delay_s, 0, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        threading.Timer(lifetime_s, self.close).start()

    def url(self, path="/a.jpg"):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _serve(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"x" * 20 + b"\r\n\r\n"
        with conn:
            try:
                conn.recv(4096)
                for i in range(len(head)):
                    if self.closed.is_set():
                        return
                    conn.sendall(head[i:i + 1])
                    time.sleep(self.delay_s)
            except OSError:
                return

    def close(self):
        self.closed.set()
        self.sock.close()


@pytest.fixture
def trickle():
    srv = TrickleServer()
    yield srv
    srv.close()


def test_deadline_bounds_trickled_headers(trickle):
    s = IngestConfig(http=HttpConfig(timeout_s=1.0, deadline_s=2.0, retries=0, allow_private=True))
    t0 = time.monotonic()
    r = fetch(trickle.url(), s)
    took = time.monotonic() - t0
    assert r.reason == "timeout" and "deadline_s=2.0" in r.detail and r.data is None
    assert took < 2.0 + 1.5, f"fetch held {took:.1f} s with deadline_s=2"        # was ~30 s: one byte per 0.4 s
    # a retried attempt gets a deadline of its own: two attempts, each cut off
    s = IngestConfig(http=HttpConfig(timeout_s=1.0, deadline_s=1.0, retries=1, backoff_s=0.05,
                                      allow_private=True))
    t0 = time.monotonic()
    r = fetch(trickle.url("/b.jpg"), s)
    assert r.reason == "timeout" and r.attempts == 2 and time.monotonic() - t0 < 2 * 1.0 + 0.05 + 2.0


def test_deadline_bounds_dns(monkeypatch):
    """A resolver that never answers (the real getaddrinfo, blocked on an unroutable resolver, cannot be
    arranged on a test machine; the stand-in sleeps): the lookup is cut off at the deadline."""
    import veclip.ingest.fetch as fetch_mod

    def hanging(*args, **kw):
        time.sleep(30)
    monkeypatch.setattr(fetch_mod.socket, "getaddrinfo", hanging)
    t0 = time.monotonic()
    r = fetch("http://slow-dns.example/a.jpg",
              IngestConfig(http=HttpConfig(timeout_s=1.0, deadline_s=1.0, retries=0)))
    assert r.reason == "timeout" and "DNS" in r.detail and time.monotonic() - t0 < 1.0 + 1.5


# -- IPv6 forms embedding IPv4 -------------------------------------------------------------------------
@pytest.mark.parametrize("ip", ["::127.0.0.1", "::ffff:0:7f00:1", "::ffff:0:a00:1", "64:ff9b::7f00:1",
                                "64:ff9b::a9fe:a9fe", "64:ff9b:1::c0a8:1", "2002:7f00:1::", "2002:a00:1::1",
                                "2002:c0a8:101::", "::ffff:127.0.0.1", "::10.0.0.1", "64:ff9b::6440:1"])
def test_ipv6_embedding_a_private_ipv4_is_refused(ip):
    with pytest.raises(Exception, match="not a public address"):
        check_address(ip, allow_private=False)
    check_address(ip, allow_private=True)


@pytest.mark.parametrize("ip", ["64:ff9b::808:808", "2002:5db8:d822::1", "::ffff:93.184.216.34",
                                "::ffff:0:808:808", "2606:4700:4700::1111"])
def test_ipv6_embedding_a_public_ipv4_passes(ip):
    check_address(ip, allow_private=False)
