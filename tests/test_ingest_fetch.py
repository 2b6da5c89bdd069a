"""Image downloads against a real HTTP server on 127.0.0.1: errors, retries, slowness, size limits, SSRF."""

import pytest

from tests.crawlgen import ImageServer, real_images
from veclip.config.ingest import HttpConfig, IngestConfig
from veclip.ingest.fetch import check_address, fetch, fetch_all

FAST = IngestConfig(http=HttpConfig(timeout_s=1.0, deadline_s=2.0, retries=2, backoff_s=0.05, concurrency=8,
                                    allow_private=True), max_bytes=1_000_000)


@pytest.fixture(scope="module")
def server(cc12m_shard):
    images = {f"{i}.jpg": data for i, (_, _, data) in enumerate(real_images(cc12m_shard)[:4])}
    with ImageServer(images, slow_s=3.0, big_blocks=24, lifetime_s=120) as srv:
        yield srv


def test_outcomes_of_every_kind_of_response(server):
    paths = ["/img/0.jpg", "/redirect/1.jpg", "/status/404", "/status/410", "/status/500", "/flaky/2.jpg",
             "/slow", "/drip", "/big", "/big-chunked", "/cut", "/html", "/img/missing.jpg"]
    got = dict(zip(paths, fetch_all([server.url(p) for p in paths], FAST)))
    assert got["/img/0.jpg"].data == server.images["0.jpg"] and got["/img/0.jpg"].attempts == 1
    assert got["/redirect/1.jpg"].data == server.images["1.jpg"]
    assert got["/flaky/2.jpg"].data == server.images["2.jpg"] and got["/flaky/2.jpg"].attempts == 3
    expected = {"/status/404": "http_404", "/status/410": "http_410", "/status/500": "http_500",
                "/slow": "timeout", "/drip": "timeout", "/big": "too_large", "/big-chunked": "too_large",
                "/cut": "truncated", "/img/missing.jpg": "http_404"}
    assert {p: got[p].reason for p in expected} == expected
    # 4xx are final, 5xx and timeouts are retried
    assert got["/status/404"].attempts == 1 and got["/status/500"].attempts == 3 and got["/slow"].attempts == 3
    assert server.hits["/status/404"] == 1 and server.hits["/status/500"] == 3
    assert "max_bytes" in got["/big"].detail and "deadline_s" in got["/drip"].detail
    # an HTML page downloads fine; the image check (not the fetcher) rejects it, with its Content-Type
    assert got["/html"].data.startswith(b"<html>") and got["/html"].content_type.startswith("text/html")


def test_private_and_loopback_addresses_are_refused_by_default(server):
    strict = IngestConfig(http=HttpConfig(timeout_s=1.0, retries=2, backoff_s=0.05))
    before = server.hits.get("/img/3.jpg", 0)
    r = fetch(server.url("/img/3.jpg"), strict)
    assert r.reason == "blocked_address" and r.attempts == 1 and "allow_private" in r.detail
    assert server.hits.get("/img/3.jpg", 0) == before          # refused before connecting
    for ip in ("10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0"):
        with pytest.raises(Exception, match="not a public address"):
            check_address(ip, allow_private=False)
    check_address("93.184.216.34", allow_private=False)       # a public address passes
    check_address("10.1.2.3", allow_private=True)


def test_bad_urls_are_reasons_not_errors():
    s = IngestConfig(http=HttpConfig(timeout_s=1.0, retries=0))
    assert fetch("ftp://example.com/a.jpg", s).reason == "bad_url"
    assert fetch("not a url", s).reason == "bad_url"
    assert fetch("http://example.com:99999/a.jpg", s).reason == "bad_url"
    assert fetch("http://no-such-host.invalid/a.jpg", s).reason == "dns_error"
