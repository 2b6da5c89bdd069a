"""Ingest without Spark: AltText cleaning, image checks, keys, and every reader on real and damaged files."""

import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.crawlgen import (bad_images, cut_file, garble, member_offsets, real_images, unusual_images,
                            write_shard)
from veclip.ingest import sample_key
from veclip.config.ingest import IngestConfig
from veclip.ingest.images import inspect_image
from veclip.ingest.inputs import expand_inputs
from veclip.ingest.readers import read_samples
from veclip.ingest.text import clean_alt_text
from veclip.ingest.webdataset import read_webdataset
from veclip.text import cut_at_word


@pytest.fixture(scope="module")
def photos(cc12m_shard):
    return real_images(cc12m_shard)


# -- AltText -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, clean", [
    ("Caf&eacute; <b>Paris</b> at&nbsp;night", "Café Paris at night"),
    ("&amp;quot;double&amp;quot; escaped &amp;amp; more", '"double" escaped & more'),
    ("<p class=\"x\">Red <a href='/q?a=1&b=2'>dress</a></p><!-- seo --><script>var a = 1 < 2;</script>",
     "Red dress"),
    ("Photo by <PERSON>/Reuters", "Photo by <PERSON>/Reuters"),            # CC12M's placeholder is kept
    ("a < b and c > d", "a < b and c > d"),                                # not tags
    ("zero\u200bwidth\u200c joiner\u200d \ufeffbom\u00adsoft", "zerowidth joiner bomsoft"),
    ("ctrl\x00\x07chars\x1b and\ttabs\r\nnew\u2028lines", "ctrlchars and tabs new lines"),
    ("ＦＵＬＬ　ｗｉｄｔｈ ﬁ ligature", "FULL width fi ligature"),          # NFKC
    ("   \n\t ", None),
    ("<br/><div></div>", None),
    (None, None),
])
def test_clean_alt_text(raw, clean):
    assert clean_alt_text(raw) == clean


def test_clean_alt_text_is_bounded_at_a_word_boundary(photos):
    long = " ".join(alt for _, alt, _ in photos)          # real AltTexts, thousands of characters
    out = clean_alt_text(long, max_chars=100)
    assert len(out) <= 100 and long.startswith(out) and long[len(out)] == " "
    assert cut_at_word("x" * 500, 100) == "x" * 100      # one endless word is cut hard


# -- images --------------------------------------------------------------------------------------------
def test_real_photos_are_accepted_with_their_header_size(photos, cc12m_shard):
    import tarfile
    with tarfile.open(cc12m_shard) as tf:
        meta = {json.loads(tf.extractfile(m).read())["url"]: json.loads(tf.extractfile(m).read())
                for m in tf.getmembers() if m.name.endswith(".json")}
    for url, _, data in photos:
        check = inspect_image(data)
        assert check.ok, check.detail
        assert (check.width, check.height) == (meta[url]["width"], meta[url]["height"])
        assert (check.format, check.mode) == ("JPEG", "RGB")
        assert check.sha256 == hashlib.sha256(data).hexdigest()


def test_unusual_images_are_accepted_as_stored(photos):
    expected = {"rgba.png": ("PNG", "RGBA"), "cmyk.jpg": ("JPEG", "CMYK"), "gray16.png": ("PNG", "I;16"),
                "palette.gif": ("GIF", "P"), "animated.gif": ("GIF", "P"), "photo.webp": ("WEBP", "RGB"),
                "exif_rotated.jpg": ("JPEG", "RGB"), "grayscale.jpg": ("JPEG", "L")}
    images = unusual_images(photos[0][2])
    assert set(images) == set(expected)
    for name, data in images.items():
        check = inspect_image(data)
        assert check.ok, f"{name}: {check.detail}"
        # EXIF orientation is not applied: the stored 96x64 stays 96x64
        assert (check.format, check.mode, check.width, check.height) == (*expected[name], 96, 64), name


def test_bad_images_get_their_reason(photos):
    for name, data in bad_images(photos[0][2]).items():
        check = inspect_image(data)
        assert not check.ok and name.startswith(check.reason), f"{name}: got {check.reason} ({check.detail})"
        assert check.detail
    assert inspect_image(None).reason == "missing_image"
    assert inspect_image(photos[0][2], IngestConfig(max_bytes=1000)).reason == "too_large"
    assert inspect_image(photos[0][2], IngestConfig(image_formats=["PNG"])).reason == "not_an_image"


def test_decompression_bomb_is_refused_from_the_header():
    from tests.crawlgen import png_header_only
    check = inspect_image(png_header_only(20_000, 20_000))   # 400 M pixels, only 4 KB of data
    assert check.reason == "too_many_pixels" and "not decoded" in check.detail
    # the same header under a generous limit is decoded, and then the missing data shows
    assert inspect_image(png_header_only(200, 200)).reason in ("truncated", "corrupt")


# -- keys ----------------------------------------------------------------------------------------------
def test_sample_key_is_stable_and_documented():
    url = "https://example.com/a.jpg?x=1"
    assert sample_key(url) == hashlib.sha256(url.encode()).hexdigest() == sample_key(f"  {url}\n", "s.tar", "1")
    no_url = sample_key(None, "/crawl/00001.tar", "000017")
    assert no_url == hashlib.sha256(b"00001.tar\x00000017").hexdigest()
    assert no_url == sample_key("", "/elsewhere/00001.tar", "000017")     # the folder does not matter
    assert no_url != sample_key(None, "/crawl/00002.tar", "000017")
    with pytest.raises(ValueError, match="needs a url"):
        sample_key(None, None, None)


# -- webdataset ----------------------------------------------------------------------------------------
def test_real_shard_reads_32_complete_samples(cc12m_shard, photos):
    samples = list(read_webdataset(str(cc12m_shard), max_bytes=20_000_000))
    assert len(samples) == 32 and all(s.reason is None for s in samples)
    assert sorted((s.url, s.alt_text_raw, s.image) for s in samples) == sorted(photos)
    assert all(len(s.source_key) == 9 for s in samples)


def _shard(tmp_path, photos, n=6):
    samples = [(f"{i:06d}", {"jpg": photos[i][2], "txt": photos[i][1].encode(),
                             "json": json.dumps({"url": photos[i][0], "key": f"{i:06d}"}).encode()})
               for i in range(n)]
    path = tmp_path / "good.tar"
    write_shard(path, samples)
    return path


def test_truncated_shard_keeps_samples_before_the_damage(tmp_path, photos):
    good = _shard(tmp_path, photos)
    offsets = member_offsets(good)
    cut = tmp_path / "cut.tar"
    cut_file(good, cut, offsets["000003.jpg"][1] + 1000)       # inside the 4th image
    got = list(read_webdataset(str(cut), 20_000_000))
    assert [s.reason for s in got] == [None, None, None, "truncated", "truncated_shard"]
    assert got[3].source_key == "000003" and got[3].url is None  # its json came after the damage
    assert got[4].source_key == f"@{offsets['000003.jpg'][0]}" and "lost" in got[4].detail

    between = tmp_path / "between.tar"
    cut_file(good, between, offsets["000004.jpg"][0])          # exactly between two samples
    got = list(read_webdataset(str(between), 20_000_000))
    assert [s.reason for s in got] == [None] * 4 + ["truncated_shard"]


def test_garbled_shard_is_reported_not_silently_short(tmp_path, photos):
    good = _shard(tmp_path, photos)
    bad = tmp_path / "garbled.tar"
    garble(good, bad, member_offsets(good)["000002.jpg"][0])    # a header turned to garbage
    got = list(read_webdataset(str(bad), 20_000_000))
    assert [s.reason for s in got] == [None, None, "corrupt_shard"]
    for name, data in (("empty.tar", b""), ("noise.tar", bytes(range(256)) * 8)):
        (tmp_path / name).write_bytes(data)
        got = list(read_webdataset(str(tmp_path / name), 20_000_000))
        assert [s.reason for s in got] == ["corrupt_shard"] and got[0].source_key == "@0"


def test_shard_members_missing_or_oversized(tmp_path, photos):
    path = tmp_path / "odd.tar"
    write_shard(path, [("a", {"txt": b"no image", "json": b'{"url": "http://x/a", "status": "failed"}'}),
                       ("b", {"png": b"\x89PNG" + b"\0" * 5000, "txt": b"big"}),
                       ("c", {"webp": b"RIFF", "json": b"not json"})])
    got = {s.source_key: s for s in read_webdataset(str(path), max_bytes=4000)}
    assert got["a"].reason == "missing_image" and got["a"].url == "http://x/a" and "failed" in got["a"].detail
    assert got["b"].reason == "too_large" and got["b"].image is None
    assert got["c"].reason is None and got["c"].url is None and got["c"].image == b"RIFF"


def test_a_reader_bug_becomes_a_row_not_a_lost_task():
    from veclip.ingest.records import Sample
    from veclip.ingest.tasks import guarded

    def broken():
        yield Sample("0")
        yield Sample("1")
        raise RuntimeError("boom")

    got = list(guarded(broken()))
    assert [s.reason for s in got] == [None, None, "reader_error"] and "boom" in got[2].detail
    assert got[2].source_key == "@error2"


# -- tables and JSON -----------------------------------------------------------------------------------
def test_url_tables_and_vecap_json(tmp_path):
    (tmp_path / "u.csv").write_text("URL,TEXT\nhttp://a/1.jpg,one\n,no url\nhttp://a/3.jpg,\"three, with comma\"\n")
    (tmp_path / "u.jsonl").write_text('{"url": "http://a/1.jpg", "caption": "x"}\nnot json\n[1]\n\n'
                                      '{"caption": "no url"}\n')
    (tmp_path / "v.json").write_text(json.dumps({"http://a/1.jpg": "a VeCap", "http://a/2.jpg": "b"}))
    (tmp_path / "bad.json").write_text('{"http://a/1.jpg": "cut')
    csv = list(read_samples(str(tmp_path / "u.csv"), "url_table", IngestConfig()))
    assert [(s.url, s.alt_text_raw, s.reason) for s in csv] == [
        ("http://a/1.jpg", "one", None), (None, "no url", "missing_url"), ("http://a/3.jpg", "three, with comma", None)]
    jl = list(read_samples(str(tmp_path / "u.jsonl"), "url_table", IngestConfig()))
    assert [s.reason for s in jl] == [None, "bad_record", "bad_record", "missing_url"]
    assert [s.source_key for s in jl] == ["0", "1", "2", "3"]
    v = list(read_samples(str(tmp_path / "v.json"), "vecap_json", IngestConfig()))
    assert [(s.url, s.alt_text_raw) for s in v] == [("http://a/1.jpg", "a VeCap"), ("http://a/2.jpg", "b")]
    assert [s.reason for s in read_samples(str(tmp_path / "bad.json"), "vecap_json", IngestConfig())] == ["corrupt_source"]
    [wrong] = read_samples(str(tmp_path / "u.csv"), "url_table", IngestConfig(url_column="image_url"))   # a config mistake
    assert wrong.reason == "corrupt_source" and "ingest.url_column" in wrong.detail


def test_real_alttext_parquet_reads_as_url_table(tmp_path):
    from tests.conftest import shared_path
    path = str(shared_path("web-alttext", "alttext-10k.parquet"))
    [f] = expand_inputs([path])
    assert f.format == "url_table"
    samples = list(read_samples(path, f.format, IngestConfig()))
    assert len(samples) == 10_000 and all(s.url and s.reason is None for s in samples[:100])


def test_img2dataset_parquet_and_a_damaged_one(tmp_path, photos):
    table = pa.table({"key": ["0", "1", "2"], "url": [p[0] for p in photos[:3]],
                      "caption": [p[1] for p in photos[:3]], "status": ["success", "failed_to_download", "success"],
                      "error_message": [None, "HTTP 404", None], "jpg": [photos[0][2], None, photos[2][2]]})
    pq.write_table(table, tmp_path / "img.parquet", row_group_size=1)
    [f] = expand_inputs([str(tmp_path / "img.parquet")])
    assert f.format == "parquet"
    got = list(read_samples(f.path, f.format, IngestConfig()))
    assert [(s.source_key, s.reason) for s in got] == [("0", None), ("1", "missing_image"), ("2", None)]
    assert got[0].image == photos[0][2] and "HTTP 404" in got[1].detail
    size = os.path.getsize(tmp_path / "img.parquet")
    cut_file(tmp_path / "img.parquet", tmp_path / "cut.parquet", size - 100)   # footer gone
    got = list(read_samples(str(tmp_path / "cut.parquet"), "parquet", IngestConfig()))
    assert [s.reason for s in got] == ["corrupt_source"]


def test_expand_inputs_folders_globs_and_errors(tmp_path, photos):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in ("00000.tar", "00001.tar"):
        write_shard(crawl / name, [("0", {"jpg": photos[0][2]})])
    (crawl / "00000.parquet").write_bytes(b"metadata")
    (crawl / "00000_stats.json").write_text("{}")
    assert [os.path.basename(f.path) for f in expand_inputs([str(crawl)])] == ["00000.tar", "00001.tar"]
    files = expand_inputs([str(crawl / "*.tar"), str(crawl / "00000.tar")])   # each file once
    assert [f.format for f in files] == ["webdataset", "webdataset"] and files[0].size > 0
    with pytest.raises(ValueError, match="matches no files"):
        expand_inputs([str(tmp_path / "nothing-*.tar")])
    with pytest.raises(ValueError, match="ingest.inputs is empty"):
        expand_inputs([])
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(ValueError, match="cannot tell the format"):
        expand_inputs([str(tmp_path / "notes.md")])
