"""Download image URLs: bounded concurrency, timeouts, retries with backoff, a byte limit, address checks.

    settings = FetchSettings(timeout_s=10, retries=2, max_bytes=20_000_000)
    results = fetch_all(["https://example.com/a.jpg", ...], settings)   # same order as the URLs
    results[0].data or results[0].reason                                 # bytes, or e.g. "http_404"

Only http(s). The host is resolved once and the connection made to the address that was checked,
so a DNS answer cannot switch a public name to an internal address between check and connect
(each redirect is checked again). Loopback, private, link-local and other non-global addresses are
refused (`blocked_address`) unless `allow_private`. A body over `max_bytes` is refused from its
Content-Length, or cut off as soon as it grows past the limit (`too_large`); a server that trickles
bytes is cut off at `deadline_s` (`timeout`). Connection errors, timeouts, cut bodies, 429 and 5xx
are retried `retries` times, waiting `backoff_s`, then twice that, ...; other 4xx are final.
Reasons: bad_url, dns_error, blocked_address, timeout, connection_error, tls_error, truncated,
too_large, too_many_redirects, http_<status>.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence
from urllib.parse import urljoin, urlsplit

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchSettings:
    timeout_s: float = 10.0
    deadline_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.5
    concurrency: int = 16
    allow_private: bool = False
    user_agent: str = "veclip-ingest/0.1"
    max_bytes: int = 20_000_000
    max_redirects: int = 5


@dataclass(frozen=True)
class FetchResult:
    data: Optional[bytes] = None
    reason: Optional[str] = None
    detail: Optional[str] = None
    status: Optional[int] = None
    content_type: Optional[str] = None
    attempts: int = 1


class _Failure(Exception):
    def __init__(self, reason: str, detail: str, retry: bool = False, status: Optional[int] = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry, self.status = reason, detail, retry, status


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address checked beforehand; Host header and TLS name stay the URL's host."""

    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def check_address(ip: str, allow_private: bool) -> None:
    """Raise _Failure(blocked_address) for a non-global address unless private ones are allowed."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    addr = mapped or addr
    if not allow_private and (not addr.is_global or addr.is_multicast):
        raise _Failure("blocked_address", f"{ip} is not a public address (set ingest.http.allow_private to allow)")


def _resolve(host: str, port: int, allow_private: bool) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise _Failure("dns_error", f"cannot resolve {host}: {e}") from None
    ips = list(dict.fromkeys(info[4][0] for info in infos))
    for ip in ips:  # every answer must be acceptable, not just the first
        check_address(ip, allow_private)
    return ips[0]


def _read_body(resp, s: FetchSettings, t0: float) -> bytes:
    length = resp.getheader("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if length is not None and length > s.max_bytes:
        raise _Failure("too_large", f"Content-Length {length:,} > max_bytes {s.max_bytes:,}")
    chunks, size = [], 0
    while True:
        if time.monotonic() - t0 > s.deadline_s:
            raise _Failure("timeout", f"body not complete after deadline_s={s.deadline_s}", retry=True)
        chunk = resp.read1(_CHUNK)  # returns what has arrived, so the deadline is checked as bytes trickle in
        if not chunk:
            break
        size += len(chunk)
        if size > s.max_bytes:
            raise _Failure("too_large", f"body passed max_bytes {s.max_bytes:,} (no or false Content-Length)")
        chunks.append(chunk)
    if length is not None and size < length:
        raise _Failure("truncated", f"body cut short: {size:,} of {length:,} bytes", retry=True)
    return b"".join(chunks)


def _get(url: str, s: FetchSettings, t0: float):
    """One GET without redirects: (status, location, content_type, body)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failure("bad_url", f"not an http(s) URL: {url[:200]!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise _Failure("bad_url", f"bad port in {url[:200]!r}: {e}") from None
    ip = _resolve(parts.hostname, port, s.allow_private)
    cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = cls(parts.hostname, port, ip, s.timeout_s)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.5"})
        resp = conn.getresponse()
        ctype = resp.getheader("Content-Type")
        if 300 <= resp.status < 400 and resp.getheader("Location"):
            return resp.status, urljoin(url, resp.getheader("Location")), ctype, None
        if resp.status == 429 or resp.status >= 500:
            raise _Failure(f"http_{resp.status}", f"HTTP {resp.status} {resp.reason}", retry=True, status=resp.status)
        if resp.status != 200:
            raise _Failure(f"http_{resp.status}", f"HTTP {resp.status} {resp.reason}", status=resp.status)
        return resp.status, None, ctype, _read_body(resp, s, t0)
    finally:
        conn.close()


def _attempt(url: str, s: FetchSettings) -> FetchResult:
    t0 = time.monotonic()
    current = url
    for _ in range(s.max_redirects + 1):
        try:
            status, location, ctype, body = _get(current, s, t0)
        except ssl.SSLError as e:
            raise _Failure("tls_error", f"TLS: {e}") from None
        except http.client.IncompleteRead as e:
            raise _Failure("truncated", f"body cut short: got {len(e.partial):,} bytes", retry=True) from None
        except (socket.timeout, TimeoutError) as e:
            raise _Failure("timeout", f"no answer within timeout_s={s.timeout_s}: {e}", retry=True) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Failure("connection_error", f"{type(e).__name__}: {e}", retry=True) from None
        if location is None:
            return FetchResult(data=body, status=status, content_type=ctype)
        current = location
    raise _Failure("too_many_redirects", f"more than max_redirects={s.max_redirects} redirects")


def fetch(url: str, s: FetchSettings) -> FetchResult:
    """Download one URL with retries; never raises."""
    for attempt in range(s.retries + 1):
        try:
            result = _attempt(url, s)
            return FetchResult(result.data, None, None, result.status, result.content_type, attempt + 1)
        except _Failure as f:
            if not f.retry or attempt == s.retries:
                return FetchResult(None, f.reason, f"{f.detail} (attempts: {attempt + 1})", f.status, None, attempt + 1)
        except Exception as e:  # noqa: BLE001 - an unexpected error is this URL's failure, not the task's
            return FetchResult(None, "connection_error", f"{type(e).__name__}: {e}", None, None, attempt + 1)
        time.sleep(s.backoff_s * (2 ** attempt))
    raise AssertionError("unreachable")


def fetch_all(urls: Sequence[str], s: FetchSettings) -> list[FetchResult]:
    """Fetch URLs with at most `s.concurrency` requests in flight; results in input order."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(s.concurrency, len(urls))) as pool:
        return list(pool.map(lambda u: fetch(u, s), urls))
