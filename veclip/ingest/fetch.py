"""Download image URLs: bounded concurrency, timeouts, retries with backoff, a byte limit, address checks.

    settings = IngestConfig(http=HttpConfig(timeout_s=10, retries=2))   # the `ingest` config section
    results = fetch_all(["https://example.com/a.jpg", ...], settings)   # same order as the URLs
    results[0].data or results[0].reason                                 # bytes, or e.g. "http_404"

Only http(s). The host is resolved once and the connection made to the address that was checked,
so a DNS answer cannot switch a public name to an internal address between check and connect
(each redirect is checked again). Loopback, private, link-local and other non-global addresses are
refused (`blocked_address`) unless `http.allow_private`; an IPv6 address that embeds an IPv4 one
(IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4) is judged by the IPv4 address it
reaches. A body over `max_bytes` is refused from its Content-Length, or cut off as soon as it grows
past the limit (`too_large`). `deadline_s` bounds one attempt whole: DNS lookup, connect, TLS,
response headers, redirects and body (`timeout`); a server that trickles bytes anywhere is cut off
(a timer shuts the socket down), and `timeout_s` bounds each single wait within it.
Connection errors, timeouts, cut bodies, 429 and 5xx
are retried `retries` times, waiting `backoff_s`, then twice that, ...; other 4xx are final.
Reasons: bad_url, dns_error, blocked_address, timeout, connection_error, tls_error, truncated,
too_large, too_many_redirects, http_<status>.
The settings are the `ingest` config section: `http.*`, and `max_bytes` for the body.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence
from urllib.parse import quote, urljoin, urlsplit

from veclip.config.ingest import IngestConfig

_CHUNK = 64 * 1024
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # RFC 6052, RFC 8215
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")        # deprecated ::a.b.c.d (RFC 4291)
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")   # ::ffff:0:a.b.c.d (RFC 2765)
_TARGET_SAFE = "/?&=:;@!$'()*+,~%[]"   # kept as they are in a request target; the rest is percent-encoded


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


class _Deadline:
    """The time budget of one attempt. Every wait is given at most what is left (`wait()`), and a timer
    shuts the attempt's sockets down when the budget runs out, so no sequence of small waits (a byte
    of headers every 0.4 s, a slow TLS handshake) can outlast it."""

    def __init__(self, seconds: float, timeout_s: float):
        self.seconds, self.timeout_s = seconds, timeout_s
        self.end = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def failure(self, during: str) -> "_Failure":
        return _Failure("timeout", f"{during} not complete after deadline_s={self.seconds}", retry=True)

    def wait(self, during: str) -> float:
        """The timeout for one blocking call: timeout_s, or less when the deadline is nearer."""
        left = self.left()
        if self.expired or left <= 0:
            raise self.failure(during)
        return min(self.timeout_s, left)

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shutdown(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked in recv on this socket
    except OSError:
        pass


def _connect(ip: str, port: int, deadline: _Deadline) -> socket.socket:
    sock = socket.create_connection((ip, port), deadline.wait("connect"))
    return deadline.watch(sock)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to an address checked beforehand; Host header and TLS name stay the URL's host."""

    def __init__(self, host: str, port: int, ip: str, deadline: _Deadline):
        super().__init__(host, port, timeout=deadline.timeout_s)
        self._ip, self._deadline = ip, deadline

    def connect(self):
        self.sock = _connect(self._ip, self.port, self._deadline)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, deadline: _Deadline):
        super().__init__(host, port, timeout=deadline.timeout_s, context=ssl.create_default_context())
        self._ip, self._deadline = ip, deadline

    def connect(self):
        sock = _connect(self._ip, self.port, self._deadline)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv6 address reaches, for the forms that embed one: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64
    (64:ff9b::/96 and the local-use 64:ff9b:1::/48, last 32 bits) and 6to4 (2002:AABB:CCDD::/48)."""
    if addr.ipv4_mapped or addr.sixtofour:
        return addr.ipv4_mapped or addr.sixtofour
    if addr in _IPV4_TRANSLATED or addr in _IPV4_COMPATIBLE or any(addr in net for net in _NAT64):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def check_address(ip: str, allow_private: bool) -> None:
    """Raise _Failure(blocked_address) for a non-global address unless private ones are allowed.
    An IPv6 address embedding an IPv4 one is judged by that IPv4 address (see embedded_ipv4)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if addr.version == 6:
        addr = embedded_ipv4(addr) or addr
    if not allow_private and (not addr.is_global or addr.is_multicast):
        raise _Failure("blocked_address", f"{ip} is not a public address (set ingest.http.allow_private to allow)")


def _within(fn, seconds: float):
    """fn() run in a daemon thread, waiting at most `seconds`; raises TimeoutError when it takes longer
    (the thread is left to finish on its own: getaddrinfo cannot be interrupted)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def _resolve(host: str, port: int, allow_private: bool, deadline: _Deadline) -> str:
    try:
        infos = _within(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), deadline.wait("DNS lookup"))
    except TimeoutError:
        raise deadline.failure(f"DNS lookup of {host}") from None
    except (socket.gaierror, UnicodeError) as e:
        raise _Failure("dns_error", f"cannot resolve {host}: {e}") from None
    ips = list(dict.fromkeys(info[4][0] for info in infos))
    for ip in ips:  # every answer must be acceptable, not just the first
        check_address(ip, allow_private)
    return ips[0]


def _read_body(resp, s: IngestConfig, deadline: _Deadline) -> bytes:
    length = resp.getheader("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if length is not None and length > s.max_bytes:
        raise _Failure("too_large", f"Content-Length {length:,} > max_bytes {s.max_bytes:,}")
    chunks, size = [], 0
    while True:
        deadline.wait("body")
        chunk = resp.read1(_CHUNK)  # returns what has arrived, so the deadline is checked as bytes trickle in
        if not chunk:
            if deadline.expired:    # the timer shut the socket: this end is the deadline's, not the body's
                raise deadline.failure("body")
            break
        size += len(chunk)
        if size > s.max_bytes:
            raise _Failure("too_large", f"body passed max_bytes {s.max_bytes:,} (no or false Content-Length)")
        chunks.append(chunk)
    if length is not None and size < length:
        raise _Failure("truncated", f"body cut short: {size:,} of {length:,} bytes", retry=True)
    return b"".join(chunks)


def _target(parts) -> str:
    """The request target of a URL, non-ASCII (an IRI, or U+FFFD of a repaired URL) percent-encoded."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return quote(target, safe=_TARGET_SAFE)


def _get(url: str, s: IngestConfig, deadline: _Deadline):
    """One GET without redirects: (status, location, content_type, body)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failure("bad_url", f"not an http(s) URL: {url[:200]!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise _Failure("bad_url", f"bad port in {url[:200]!r}: {e}") from None
    ip = _resolve(parts.hostname, port, s.http.allow_private, deadline)
    cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = cls(parts.hostname, port, ip, deadline)
    try:
        conn.request("GET", _target(parts), headers={"User-Agent": s.http.user_agent, "Accept": "image/*,*/*;q=0.5"})
        resp = conn.getresponse()
        ctype = resp.getheader("Content-Type")
        if 300 <= resp.status < 400 and resp.getheader("Location"):
            return resp.status, urljoin(url, resp.getheader("Location")), ctype, None
        if resp.status == 429 or resp.status >= 500:
            raise _Failure(f"http_{resp.status}", f"HTTP {resp.status} {resp.reason}", retry=True, status=resp.status)
        if resp.status != 200:
            raise _Failure(f"http_{resp.status}", f"HTTP {resp.status} {resp.reason}", status=resp.status)
        return resp.status, None, ctype, _read_body(resp, s, deadline)
    finally:
        conn.close()


def _attempt(url: str, s: IngestConfig) -> FetchResult:
    deadline = _Deadline(s.http.deadline_s, s.http.timeout_s)   # one budget for every redirect of this attempt
    try:
        return _follow(url, s, deadline)
    except _Failure:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a shut socket raised, past the deadline it is a timeout
        if deadline.expired:
            raise deadline.failure("download") from None
        raise _failure_of(e, s) from None
    finally:
        deadline.cancel()


def _failure_of(e: Exception, s: IngestConfig) -> Exception:
    """The _Failure of a network exception (others are returned as they are)."""
    if isinstance(e, ssl.SSLError):
        return _Failure("tls_error", f"TLS: {e}")
    if isinstance(e, http.client.IncompleteRead):
        return _Failure("truncated", f"body cut short: got {len(e.partial):,} bytes", retry=True)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return _Failure("timeout", f"no answer within timeout_s={s.http.timeout_s}: {e}", retry=True)
    if isinstance(e, (OSError, http.client.HTTPException)):
        return _Failure("connection_error", f"{type(e).__name__}: {e}", retry=True)
    return e


def _follow(url: str, s: IngestConfig, deadline: _Deadline) -> FetchResult:
    current = url
    for _ in range(s.http.max_redirects + 1):
        status, location, ctype, body = _get(current, s, deadline)
        if location is None:
            return FetchResult(data=body, status=status, content_type=ctype)
        current = location
    raise _Failure("too_many_redirects", f"more than max_redirects={s.http.max_redirects} redirects")


def fetch(url: str, s: IngestConfig) -> FetchResult:
    """Download one URL with retries; never raises."""
    for attempt in range(s.http.retries + 1):
        try:
            result = _attempt(url, s)
            return FetchResult(result.data, None, None, result.status, result.content_type, attempt + 1)
        except _Failure as f:
            if not f.retry or attempt == s.http.retries:
                return FetchResult(None, f.reason, f"{f.detail} (attempts: {attempt + 1})", f.status, None, attempt + 1)
        except Exception as e:  # noqa: BLE001 - an unexpected error is this URL's failure, not the task's
            return FetchResult(None, "connection_error", f"{type(e).__name__}: {e}", None, None, attempt + 1)
        time.sleep(s.http.backoff_s * (2 ** attempt))
    raise AssertionError("unreachable")


def fetch_all(urls: Sequence[str], s: IngestConfig) -> list[FetchResult]:
    """Fetch URLs with at most `s.http.concurrency` requests in flight; results in input order."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(s.http.concurrency, len(urls))) as pool:
        return list(pool.map(lambda u: fetch(u, s), urls))
