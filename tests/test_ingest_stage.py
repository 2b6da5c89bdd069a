"""The ingest stage on a crawl full of broken and unusual samples, in every input format, through Spark
and real Delta tables (checked again with delta-rs), then run again: nothing is added twice.

One module fixture runs the stage twice (Spark is slow here); the tests assert on what it wrote.
"""

import hashlib
import json
import os

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.crawlgen import (ImageServer, bad_images, cut_file, garble, member_offsets, real_images,
                            unusual_images, write_shard)
from veclip.ingest import sample_key

FORMAT_OF = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "webp": "WEBP"}
REASONS = ("zero_bytes", "truncated", "not_an_image", "too_small", "too_many_pixels", "corrupt")
DAMAGED = ("cut.tar", "garbled.tar", "empty.tar")
N_FILES = 8   # mixed, cut, garbled, empty .tar; img2dataset.parquet; urls.csv; vecap.json; rows.jsonl


def _wds(key, image=None, ext="jpg", url=None, text=None):
    parts = {} if image is None else {ext: image}
    if text is not None:
        parts["txt"] = text.encode()
    if url is not None:
        parts["json"] = json.dumps({"url": url, "key": key, "status": "success"}).encode()
    return key, parts


class Crawl:
    """Builds the crawl and what each sample must become: expected[key] = None (bronze) or a reason."""

    def __init__(self, root, photos, server):
        self.root, self.photos, self.server = root, photos, server
        self.expected, self.images, self.texts = {}, {}, {}
        root.mkdir()

    def path(self, name):
        return str(self.root / name)

    def expect(self, key, reason=None, image=None, text=None):
        assert key not in self.expected, f"generator bug: key {key} twice"
        self.expected[key] = reason
        if image is not None:
            self.images[key] = image
        if text is not None:
            self.texts[key] = text

    def mixed_shard(self):
        p, samples = self.photos, []
        for i in range(4):                                   # real CC12M samples
            samples.append(_wds(f"{i:06d}", p[i][2], url=p[i][0], text=p[i][1]))
            self.expect(sample_key(p[i][0]), image=p[i][2], text=p[i][1])
        samples.append(_wds("dup-of-0", p[11][2], url=p[0][0], text="same URL again"))  # duplicate key
        for name, data in unusual_images(p[1][2]).items():
            url = None if name == "grayscale.jpg" else f"http://unusual.example/{name}"
            key = name.replace(".", "_")
            samples.append(_wds(key, data, name.rsplit(".", 1)[1], url=url, text=f"unusual {name}"))
            self.expect(sample_key(url, self.path("mixed.tar"), key), image=data)
        for name, data in bad_images(p[2][2]).items():
            url = f"http://bad.example/{name}"
            samples.append(_wds(name, data, "webp" if "webp" in name else "jpg", url=url, text=name))
            self.expect(sample_key(url), next(r for r in REASONS if name.startswith(r)))
        samples.append(_wds("no-image", url="http://bad.example/no-image", text="only text"))
        self.expect(sample_key("http://bad.example/no-image"), "missing_image")
        samples.append(_wds("huge", b"\xff\xd8\xff" + os.urandom(2_100_000), url="http://bad.example/huge"))
        self.expect(sample_key("http://bad.example/huge"), "too_large")
        raw = "<p>Caf&eacute;\u200b  <b>Moscow</b>&amp;amp;\tnight</p>"
        samples.append(_wds("html-alt", p[3][2][:], url="http://alt.example/html", text=raw))
        self.expect(sample_key("http://alt.example/html"), text=raw)
        write_shard(self.path("mixed.tar"), samples)

    def damaged_shards(self):
        p = self.photos
        for name, ids in (("cut", (4, 5, 6, 7)), ("garbled", (8, 9, 10))):
            write_shard(self.path(f"{name}.tmp"), [_wds(f"{i:06d}", p[i][2], url=p[i][0], text=p[i][1]) for i in ids])
        header, data = member_offsets(self.path("cut.tmp"))["000006.jpg"]
        cut_file(self.path("cut.tmp"), self.path("cut.tar"), data + 500)                # inside an image
        for i in (4, 5, 8, 9):
            self.expect(sample_key(p[i][0]), image=p[i][2])
        self.expect(sample_key(None, self.path("cut.tar"), "000006"), "truncated")
        self.expect(sample_key(None, self.path("cut.tar"), f"@{header}"), "truncated_shard")
        garble_at = member_offsets(self.path("garbled.tmp"))["000010.jpg"][0]         # a member header
        garble(self.path("garbled.tmp"), self.path("garbled.tar"), garble_at)
        self.expect(sample_key(None, self.path("garbled.tar"), f"@{garble_at}"), "corrupt_shard")
        for name in ("cut", "garbled"):
            os.remove(self.path(f"{name}.tmp"))
        open(self.path("empty.tar"), "wb").close()
        self.expect(sample_key(None, self.path("empty.tar"), "@0"), "corrupt_shard")

    def image_parquet(self):
        p = self.photos
        pq.write_table(pa.table({"key": ["a", "b", "c"], "url": [p[12][0], p[13][0], "http://gone.example/x"],
                                 "caption": [p[12][1], p[13][1], "gone"], "status": ["success"] * 2 + ["failed"],
                                 "error_message": [None, None, "404"], "jpg": [p[12][2], p[13][2], None]}),
                       self.path("img2dataset.parquet"))
        for i in (12, 13):
            self.expect(sample_key(p[i][0]), image=p[i][2])
        self.expect(sample_key("http://gone.example/x"), "missing_image")

    def url_files(self):
        s, p = self.server, self.photos
        rows = [(s.url("/img/14.jpg"), None), (s.url("/redirect/15.jpg"), None), (s.url("/flaky/16.jpg"), None),
                (s.url("/status/404"), "http_404"), (s.url("/status/503"), "http_503"), (s.url("/slow"), "timeout"),
                (s.url("/big"), "too_large"), (s.url("/html"), "not_an_image"), (s.url("/cut"), "truncated"),
                ("ftp://files.example/a.jpg", "bad_url")]
        with open(self.path("urls.csv"), "w") as f:
            f.write("URL,TEXT\n" + "".join(f"{u},alt {i}\n" for i, (u, _) in enumerate(rows)) + ",no url here\n")
        for i, (u, reason) in enumerate(rows):
            self.expect(sample_key(u), reason, image=p[14 + i][2] if reason is None else None)
        self.expect(sample_key(None, self.path("urls.csv"), str(len(rows))), "missing_url")
        with open(self.path("vecap.json"), "w") as f:      # /img/14.jpg again: a duplicate across files
            json.dump({s.url("/img/17.jpg"): "A VeCap caption.", s.url("/img/14.jpg"): "dup"}, f)
        self.expect(sample_key(s.url("/img/17.jpg")), image=p[17][2], text="A VeCap caption.")
        with open(self.path("rows.jsonl"), "w") as f:
            f.write(json.dumps({"url": s.url("/img/18.jpg"), "caption": "ok"}) + "\n{broken\n")
        self.expect(sample_key(s.url("/img/18.jpg")), image=p[18][2])
        self.expect(sample_key(None, self.path("rows.jsonl"), "1"), "bad_record")




@pytest.fixture(scope="module")
def run(spark, cc12m_shard, tmp_path_factory):
    from veclip.config import load_config
    from veclip.ingest.stage import run_ingest
    from veclip.tables import Tables

    photos = real_images(cc12m_shard)
    served = {f"{i}.jpg": data for i, (_, _, data) in enumerate(photos)}
    tmp = tmp_path_factory.mktemp("ingest")
    with ImageServer(served, slow_s=4.0, lifetime_s=600) as server:
        crawl = Crawl(tmp / "crawl", photos, server)
        crawl.mixed_shard(), crawl.damaged_shards(), crawl.image_parquet(), crawl.url_files()
        cfg = load_config(str(REPO / "conf" / "local.yaml"), [
            f"paths.root={tmp / 'root'}", "spark.master=local[2]", "spark.shuffle_partitions=2",
            f"ingest.inputs={crawl.root}/*", "ingest.max_bytes=2000000", "ingest.files_per_partition=2",
            "ingest.urls_per_partition=6", "ingest.http.allow_private=true", "ingest.http.timeout_s=1",
            "ingest.http.deadline_s=3", "ingest.http.retries=2", "ingest.http.backoff_s=0.05"])
        first = run_ingest(cfg, spark)
        hits_after_first = dict(server.hits)
        tables = Tables(cfg, spark)
        snap = {name: tables.read(name).toPandas() for name in ("bronze", "quarantine", "ingest_files")}
        second = run_ingest(cfg, spark)
        after = {name: tables.read(name).count() for name in ("bronze", "quarantine")}
        hits_after_second = dict(server.hits)
    return dict(crawl=crawl, cfg=cfg, tables=tables, first=first, second=second, snap=snap, after=after,
                hits=(hits_after_first, hits_after_second))


def test_every_key_is_in_exactly_one_table_with_the_right_reason(run):
    bronze, quarantine, expected = run["snap"]["bronze"], run["snap"]["quarantine"], run["crawl"].expected
    assert not set(bronze.key) & set(quarantine.key)
    assert bronze.key.is_unique and quarantine.key.is_unique
    assert sorted(bronze.key) == sorted(k for k, r in expected.items() if r is None)
    got = dict(zip(quarantine.key, quarantine.reason))
    want = {k: r for k, r in expected.items() if r is not None}
    assert {k: got.get(k) for k in want} == want
    assert set(got) == set(want)
    assert (quarantine.stage == "ingest").all() and quarantine.detail.str.len().gt(0).all()


def test_bronze_keeps_bytes_size_and_texts(run):
    crawl, bronze = run["crawl"], run["snap"]["bronze"].set_index("key")
    for key, image in crawl.images.items():
        row = bronze.loc[key]
        assert row.image == image and row.image_sha256 == hashlib.sha256(image).hexdigest()
    for name, data in unusual_images(crawl.photos[1][2]).items():
        url = None if name == "grayscale.jpg" else f"http://unusual.example/{name}"
        row = bronze.loc[sample_key(url, crawl.path("mixed.tar"), name.replace(".", "_"))]
        assert (row.width, row.height) == (96, 64) and row.image_format == FORMAT_OF[name.rsplit(".", 1)[1]]
    assert sorted(bronze.loc[bronze.source.str.endswith("mixed.tar")].image_mode.unique()) == \
        ["CMYK", "I;16", "L", "P", "RGB", "RGBA"]
    html = bronze.loc[sample_key("http://alt.example/html")]
    assert html.alt_text_raw == crawl.texts[sample_key("http://alt.example/html")]
    assert html.alt_text == "Café Moscow & night"
    vecap = bronze.loc[sample_key(crawl.server.url("/img/17.jpg"))]
    assert (vecap.alt_text, vecap.source_format) == ("A VeCap caption.", "vecap_json")
    # the duplicate URL kept its first copy
    assert bronze.loc[sample_key(crawl.photos[0][0])].image == crawl.photos[0][2]
    assert set(bronze.source_format) == {"webdataset", "parquet", "url_table", "vecap_json"}
    assert bronze.ingested_at.notna().all() and bronze.source.str.startswith(str(crawl.root)).all()


def test_accounting_adds_up_and_counts_reasons(run):
    r, expected = run["first"], run["crawl"].expected
    assert r.broken() == []
    c = r.counts
    assert c["bronze"] == sum(v is None for v in expected.values())
    assert c["quarantine"] == sum(v is not None for v in expected.values())
    assert (c["duplicate_in_input"], c["already_present"]) == (2, 0)       # URL of photo 0 twice, /img/14 twice
    assert c["read"] == len(expected) + 2
    for reason in set(v for v in expected.values() if v):
        assert c[f"quarantine.{reason}"] == sum(v == reason for v in expected.values()), reason
    assert c["files"] == N_FILES and c["files_skipped"] == 0
    assert "read = bronze + quarantine" in r.format()


def test_rerun_adds_nothing_and_rereads_only_damaged_files(run):
    r, first = run["second"], run["first"]
    assert r.broken() == []
    assert (r.counts["bronze"], r.counts["quarantine"]) == (0, 0)
    assert run["after"] == {"bronze": first.counts["bronze"], "quarantine": first.counts["quarantine"]}
    assert r.counts["files_skipped"] == N_FILES - len(DAMAGED)
    # damaged files are read again: cut.tar 2 good + 1 truncated + its rest, garbled.tar 2 + rest, empty.tar 1
    assert r.counts["already_present"] == r.counts["read"] == 4 + 3 + 1
    ledger = run["snap"]["ingest_files"].set_index("source")
    assert sorted(os.path.basename(s) for s in ledger.index[~ledger.complete]) == sorted(DAMAGED)
    # no URL was downloaded again
    assert run["hits"][1] == run["hits"][0]


def test_tables_read_the_same_with_delta_rs(run):
    for name in ("bronze", "quarantine"):
        dt = deltalake.DeltaTable(run["tables"].location(name))
        df = dt.to_pandas(columns=["key"])
        assert sorted(df.key) == sorted(run["snap"][name].key), name
    schema = {f.name for f in deltalake.DeltaTable(run["tables"].location("bronze")).schema().fields}
    from veclip.schemas import BRONZE
    assert schema == set(BRONZE.names)
