"""`--retry-quarantined` through Spark and real Delta tables, on a crawl that mixes good rows with
hostile ones: a shard half-copied when first read, a URL that answers 503 twice, a 404, and lone
surrogates in a webdataset `.json`, a JSONL URL table and a VeCap JSON file.

Three runs on one root: (1) plain, (2) after the full shard arrived, retrying (config key),
(3) retrying again (the `--retry-quarantined` flag). After each, every key is in exactly one of
bronze and quarantine, and the accounting adds up.
"""

import json
import os

import pytest

from tests.conftest import REPO
from tests.crawlgen import ImageServer, cut_file, member_offsets, real_images, write_shard
from veclip.ingest import sample_key

BAD_JSON = "\\ud800"


def _wds(i, photos, url=None):
    url = url or photos[i][0]
    return f"{i:06d}", {"jpg": photos[i][2], "txt": photos[i][1].encode(), "json": json.dumps({"url": url}).encode()}


@pytest.fixture(scope="module")
def runs(spark, cc12m_shard, tmp_path_factory):
    from veclip.config import load_config
    from veclip.ingest.stage import run_ingest
    from veclip.tables import Tables

    photos = real_images(cc12m_shard)
    tmp = tmp_path_factory.mktemp("retry")
    crawl = tmp / "crawl"
    crawl.mkdir()
    with ImageServer({f"{i}.jpg": p[2] for i, p in enumerate(photos)}, lifetime_s=900) as srv:
        write_shard(tmp / "full.tar", [_wds(i, photos) for i in range(6)])
        cut_file(tmp / "full.tar", crawl / "s.tar", member_offsets(tmp / "full.tar")["000003.jpg"][1] + 500)
        hostile_meta = ('{"url": "http://h.example/' + BAD_JSON + '.jpg", "caption": "x' + BAD_JSON + '"}').encode()
        write_shard(crawl / "hostile.tar", [("h0", {"jpg": photos[10][2], "json": hostile_meta})])
        (crawl / "urls.csv").write_text("url,caption\n" + "".join(
            f"{srv.url(p)},alt\n" for p in ("/flaky/20.jpg", "/status/404", "/img/21.jpg")))
        (crawl / "rows.jsonl").write_text('{"url": "' + srv.url("/img/22.jpg") + BAD_JSON + '", "caption": "s"}\n'
                                          '{"url": "' + srv.url("/img/23.jpg") + '", "caption": "' + BAD_JSON + '"}\n')
        (crawl / "vecap.json").write_text('{"' + srv.url("/img/24.jpg") + '": "vecap ' + BAD_JSON + '"}')
        base = [f"paths.root={tmp / 'root'}", "spark.master=local[2]", "spark.shuffle_partitions=2",
                f"ingest.inputs={crawl}/*", "ingest.http.allow_private=true", "ingest.http.timeout_s=1",
                "ingest.http.deadline_s=3", "ingest.http.retries=0"]
        cfg = load_config(str(REPO / "conf" / "local.yaml"), base)
        tables = Tables(cfg, spark)
        out = {}

        def snap(name, report):
            out[name] = dict(report=report, hits=dict(srv.hits),
                             bronze=tables.read("bronze").toPandas(), quarantine=tables.read("quarantine").toPandas())

        snap("first", run_ingest(cfg, spark))
        os.replace(tmp / "full.tar", crawl / "s.tar")                    # the rest of the shard arrived
        retry_cfg = load_config(str(REPO / "conf" / "local.yaml"), base + ["ingest.retry_quarantined=true"])
        snap("second", run_ingest(retry_cfg, spark))
        snap("third", run_ingest(cfg, spark, inputs=(), retry_quarantined=True))
        out.update(photos=photos, srv_url=srv.url, crawl=crawl)
    return out


def _check_exactly_once(run):
    bronze, quarantine = run["bronze"], run["quarantine"]
    assert bronze.key.is_unique and quarantine.key.is_unique
    assert not set(bronze.key) & set(quarantine.key)
    assert run["report"].broken() == [], run["report"].format()


def test_first_run_quarantines_the_cut_tail_and_the_transient_failures(runs):
    first, photos, url = runs["first"], runs["photos"], runs["srv_url"]
    _check_exactly_once(first)
    reasons = dict(zip(first["quarantine"].key, first["quarantine"].reason))
    assert reasons[sample_key(None, str(runs["crawl"] / "s.tar"), "000003")] == "truncated"   # cut before its .json
    assert sorted(reasons.values()).count("truncated_shard") == 1
    assert reasons[sample_key(url("/flaky/20.jpg"))] == "http_503"
    assert reasons[sample_key(url("/status/404"))] == "http_404"
    assert reasons[sample_key(url("/img/22.jpg") + "\ufffd")] == "http_404"      # repaired URL, then fetched


def test_hostile_text_is_repaired_in_every_format(runs):
    bronze = runs["first"]["bronze"].set_index("key")
    wds = bronze.loc[sample_key("http://h.example/\ufffd.jpg")]
    assert wds.alt_text_raw == "x\ufffd" and wds.alt_text == "x"
    assert bronze.loc[sample_key(runs["srv_url"]("/img/23.jpg"))].alt_text_raw == "\ufffd"
    assert bronze.loc[sample_key(runs["srv_url"]("/img/24.jpg"))].alt_text_raw == "vecap \ufffd"


def test_retry_ingests_the_tail_of_the_full_shard_and_forgets_its_quarantine(runs):
    second, photos, url = runs["second"], runs["photos"], runs["srv_url"]
    _check_exactly_once(second)
    for i in range(6):
        assert sample_key(photos[i][0]) in set(second["bronze"].key), i
    reasons = dict(zip(second["quarantine"].key, second["quarantine"].reason))
    assert "truncated" not in reasons.values() and "truncated_shard" not in reasons.values()
    assert reasons[sample_key(url("/flaky/20.jpg"))] == "http_503"               # failed again: row kept, updated
    c = second["report"].counts
    assert (c["retried"], c["recovered"], c["bronze"], c["quarantine"]) == (3, 2, 3, 1)
    # final reasons are not retried: the 404s were not fetched again
    assert second["hits"]["/status/404"] == runs["first"]["hits"]["/status/404"] == 1
    assert second["hits"]["/flaky/20.jpg"] == 2


def test_retry_flag_recovers_the_flaky_url(runs):
    third, url = runs["third"], runs["srv_url"]
    _check_exactly_once(third)
    assert third["hits"]["/flaky/20.jpg"] == 3
    assert sample_key(url("/flaky/20.jpg")) in set(third["bronze"].key)
    assert sorted(third["quarantine"].reason) == ["http_404", "http_404"]
    c = third["report"].counts
    assert (c["retried"], c["recovered"], c["bronze"], c["quarantine"]) == (1, 1, 1, 0)


def test_retry_flag_is_on_the_ingest_job():
    from veclip.cli import build_parser
    assert build_parser().parse_args(["ingest", "--retry-quarantined"]).retry_quarantined is True
    assert build_parser().parse_args(["ingest"]).retry_quarantined is False
