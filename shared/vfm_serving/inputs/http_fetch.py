"""Download image bytes from http(s) URLs: the one place a URL turns into a socket (SSRF guard).

Every download, and every redirect hop of it:

1. `parse_target`: http/https only, a host, no userinfo (`user@host`), a valid port. Numeric IPv4
   hosts in any inet_aton form (`2130706433`, `0x7f.1`, `0177.0.0.1`) are read as the address
   they denote, so they cannot slip past the address check.
2. `resolve`: the host's addresses (IP literal, or DNS within the deadline); `localhost` /
   `*.localhost` are loopback by definition. Unless `allow_private` (or the URL's origin is in
   `trusted_origins`), the URL is refused if ANY address is not public (`address_block_reason`).
3. The socket connects to one of the very addresses that were checked (no second DNS lookup that
   a rebinding DNS server could answer differently). The `Host` header, and for https the SNI and
   the certificate check, use the URL's host name.
4. Redirects are followed here (never by a library), re-checked from step 1, at most
   `max_redirects`; credentials headers are dropped when a redirect changes the origin.
5. One total deadline (`timeout_s`) covers DNS, connect, TLS, every hop and every byte of the
   body: a watchdog shuts the socket down when it passes, so a server trickling one byte per second
   is cut off at the deadline. The body is streamed and cut off at `max_bytes`.
"""

import concurrent.futures
import dataclasses
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from typing import Collection, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urljoin, urlsplit

from vfm_serving.errors import (
    FetchFailed,
    FetchTimeout,
    ImageTooLarge,
    InvalidUrl,
    TooManyRedirects,
    UrlCredentialsNotAllowed,
    UrlHostNotFound,
    UrlPrivateAddress,
    UrlSchemeNotAllowed,
    safe_text,
)

log = logging.getLogger(__name__)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_CHUNK = 64 * 1024
_SCHEMES = {"http": 80, "https": 443}
_REDIRECTS = (301, 302, 303, 307, 308)
# Headers that carry credentials: sent only to the origin the caller named.
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
_USER_AGENT = "vfm-serving (image fetch)"
# Characters kept as they are when re-quoting a request target (as requests' requote_uri).
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_DNS_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="dns")

# --- which addresses are not public --------------------------------------------------------------
# Written out (not only ipaddress' is_private/is_global, whose tables changed across Python
# patch releases) so the rule is the same everywhere.
_V4_BLOCKED: Tuple[Tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), reason) for net, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "private"),          # carrier-grade NAT (shared address space)
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),      # cloud metadata services live here
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),          # IETF protocol assignments
        ("192.0.2.0/24", "reserved"),          # documentation
        ("192.88.99.0/24", "reserved"),        # 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),         # benchmarking
        ("198.51.100.0/24", "reserved"),       # documentation
        ("203.0.113.0/24", "reserved"),        # documentation
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),           # includes 255.255.255.255 broadcast
    ))
_V6_BLOCKED: Tuple[Tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), reason) for net, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),         # local-use NAT64
        ("100::/64", "reserved"),              # discard-only
        ("2001::/23", "reserved"),             # IETF protocol assignments (incl. Teredo, ORCHID)
        ("2001:db8::/32", "reserved"),         # documentation
        ("3fff::/20", "reserved"),             # documentation
        ("5f00::/16", "reserved"),             # segment routing SIDs
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),              # deprecated site-local
        ("ff00::/8", "multicast"),
    ))
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def address_block_reason(address: IPAddress) -> Optional[str]:
    """Why `address` must not be fetched from ("loopback", "private", "link-local",
    "unique-local", "multicast", "reserved", "unspecified", or "<kind> <embedded v4>: <reason>"
    for IPv4 embedded in IPv6), or None for a public address."""
    if isinstance(address, ipaddress.IPv4Address):
        return next((reason for net, reason in _V4_BLOCKED if address in net), None)
    if address.scope_id:
        return "link-local"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, v4 = embedded
        inner = address_block_reason(v4)
        return f"{kind} {v4}: {inner}" if inner else None
    return next((reason for net, reason in _V6_BLOCKED if address in net), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> Optional[Tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 address a transition form carries (mapped, translated, compatible, NAT64, 6to4)."""
    packed = address.packed
    if address in _V4_MAPPED or address in _V4_TRANSLATED or address in _NAT64:
        kind = "IPv4-mapped" if address in _V4_MAPPED else (
            "IPv4-translated" if address in _V4_TRANSLATED else "NAT64")
        return kind, ipaddress.IPv4Address(packed[12:])
    if address in _V4_COMPATIBLE and int(address) > 1:  # :: and ::1 are in the table
        return "IPv4-compatible", ipaddress.IPv4Address(packed[12:])
    if address in _SIX_TO_FOUR:
        return "6to4", ipaddress.IPv4Address(packed[2:6])
    return None


def parse_legacy_ipv4(host: str) -> Optional[ipaddress.IPv4Address]:
    """The address of a numeric host in inet_aton's forms (what browsers and getaddrinfo accept):
    1-4 dot-separated parts, each decimal, 0x-hex or 0-octal, the last filling the remaining bytes
    (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`). None when `host` is not such a form.

    Raises:
        InvalidUrl: a numeric-looking host that is not a valid address (`256.1.1.1`, `1.2.3.4.5`).
    """
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # trailing dot
    if not parts or not all(re.fullmatch(r"0[xX][0-9a-fA-F]*|[0-9]+", p) for p in parts):
        return None
    try:
        values = [int(p, 16) if p[:2].lower() == "0x" and len(p) > 2 else
                  (0 if p.lower() == "0x" else int(p, 8) if len(p) > 1 and p[0] == "0"
                   else int(p)) for p in parts]
    except ValueError:
        raise InvalidUrl(f"URL host {safe_text(host, 64)} is not a valid IPv4 address") from None
    if len(values) > 4 or any(v > 255 for v in values[:-1]) \
            or values[-1] >= 256 ** (5 - len(values)):
        raise InvalidUrl(f"URL host {safe_text(host, 64)} is not a valid IPv4 address")
    number = 0
    for v in values[:-1]:
        number = number * 256 + v
    number = number * 256 ** (5 - len(values)) + values[-1]
    return ipaddress.IPv4Address(number)


# --- URL parsing ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """One request target. `host` is ASCII (IDNA), lower case, without brackets; `address` is set
    when the host is an IP literal (in any form)."""

    scheme: str
    host: str
    port: int
    path: str  # request target: path + query, percent-encoded
    address: Optional[IPAddress]

    @property
    def origin(self) -> str:
        """`scheme://host:port`, the unit `trusted_origins` and credential headers go by."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _SCHEMES[self.scheme] else f"{host}:{self.port}"


def parse_target(url: object) -> Target:
    """Check `url` and split it into what a request needs.

    Raises:
        InvalidUrl: not a string, no scheme/host, bad port, host not a valid name or address.
        UrlSchemeNotAllowed: a scheme other than http/https.
        UrlCredentialsNotAllowed: a userinfo part (anything before `@` in the authority).
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl("image URL must be a non-empty string")
    text = url.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidUrl("image URL contains control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidUrl("image URL is malformed (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in _SCHEMES:
        raise UrlSchemeNotAllowed(f"URL scheme {safe_text(scheme, 32)!r} is not allowed: "
                                  "use http:// or https://")
    if not scheme or not parts.netloc:
        raise InvalidUrl("image URL must be an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        raise UrlCredentialsNotAllowed("credentials in URLs (user@host) are not allowed")
    if port == 0:
        raise InvalidUrl("image URL has port 0")
    host, address = _parse_host(parts.hostname or "")
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    return Target(scheme, host, port or _SCHEMES[scheme], target, address)


def _parse_host(raw: str) -> Tuple[str, Optional[IPAddress]]:
    """(ASCII host, its address when it is an IP literal).

    Raises:
        InvalidUrl: empty, not IDNA-encodable, or not a valid DNS name / address.
    """
    if not raw:
        raise InvalidUrl("image URL has no host")
    if "%" in raw:
        raise InvalidUrl("IPv6 zone identifiers are not allowed in image URLs")
    if ":" in raw:  # bracketed IPv6 literal (urlsplit removed the brackets)
        try:
            v6 = ipaddress.IPv6Address(raw)
        except ValueError:
            raise InvalidUrl(f"URL host [{safe_text(raw, 64)}] is not an IPv6 address") from None
        return raw, v6
    legacy = parse_legacy_ipv4(raw)
    if legacy is not None:
        return raw, legacy
    try:
        host = raw.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidUrl(f"URL host {safe_text(raw, 64)} is not a valid host name") from None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise InvalidUrl(f"URL host {safe_text(raw, 64)} is not a valid host name")
    return host, None


def validate_url(url: object) -> str:
    """Return `url` (stripped) if it is an absolute http/https URL with a valid host and no
    credentials. Address checks happen when fetching (they need DNS and the settings).

    Raises:
        InvalidUrl (or UrlSchemeNotAllowed / UrlCredentialsNotAllowed): see `parse_target`.
    """
    parse_target(url)
    return str(url).strip()


# --- resolving and checking ----------------------------------------------------------------------


class _Deadline:
    """One total deadline; a watchdog shuts down the registered socket when it passes."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s
        self.expired = False
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left. Raises FetchTimeout once the deadline has passed."""
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            raise self.error()
        return left

    def error(self) -> FetchTimeout:
        return FetchTimeout(f"download did not finish within {self.timeout_s:g}s")

    def watch(self, sock: Optional[socket.socket]) -> None:
        with self._lock:
            self._sock = sock
            if self.expired and sock is not None:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (yet / any more): nothing to interrupt


Resolved = Tuple[IPAddress, Tuple]  # (address checked, numeric sockaddr connected to)


def resolve(target: Target, deadline: "_Deadline") -> List[Resolved]:
    """Addresses to connect to for `target`, in resolver order, de-duplicated, each with the
    numeric socket address that will be connected to (no further name lookup).

    Raises:
        UrlHostNotFound: DNS has no address for the host.
        FetchTimeout: the lookup did not finish before the deadline.
    """
    if target.address is not None:
        ip = target.address
        return [(ip, (str(ip), target.port) if ip.version == 4 else (str(ip), target.port, 0, 0))]
    future = _DNS_POOL.submit(socket.getaddrinfo, target.host, target.port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=deadline.remaining())
    except concurrent.futures.TimeoutError:
        raise deadline.error() from None
    except (OSError, UnicodeError):
        raise UrlHostNotFound(f"host {target.host} could not be resolved") from None
    resolved: List[Resolved] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        scope = sockaddr[3] if len(sockaddr) == 4 else 0
        if scope:
            ip = ipaddress.IPv6Address(f"{ip}%{scope}")  # scoped: link-local
        if all(ip != seen for seen, _ in resolved):
            resolved.append((ip, tuple(sockaddr)))
    if not resolved:
        raise UrlHostNotFound(f"host {target.host} has no IPv4/IPv6 address")
    return resolved


def check_host_name(target: Target) -> None:
    """Refuse `localhost` and `*.localhost` (loopback by definition, RFC 6761) before any lookup.

    Raises:
        UrlPrivateAddress.
    """
    name = target.host.rstrip(".")
    if target.address is None and (name == "localhost" or name.endswith(".localhost")):
        raise UrlPrivateAddress(f"host {target.host} is loopback; private addresses are not "
                                "allowed")


def check_addresses(target: Target, addresses: List[IPAddress]) -> None:
    """Refuse the target if ANY of its addresses is not public (one bad answer is enough: the
    connection could go to any of them).

    Raises:
        UrlPrivateAddress: naming the rule (the address itself is named only for IP literals).
    """
    for address in addresses:
        reason = address_block_reason(address)
        if reason is not None:
            shown = f"{target.host} ({reason})" if target.address is not None else \
                f"{target.host} resolves to a {reason.split(' ')[0]} address"
            raise UrlPrivateAddress(f"host {shown}; private addresses are not allowed")


# --- one request ---------------------------------------------------------------------------------


def _connect(target: Target, addresses: List[Resolved], deadline: "_Deadline",
             ssl_context: Optional[ssl.SSLContext]) -> socket.socket:
    """A connected (and for https, TLS-verified) socket to one of `addresses`, tried in order.

    Raises:
        FetchFailed: no address accepted the connection, or TLS failed.
        FetchTimeout: the deadline passed.
    """
    last: Optional[OSError] = None
    for address, sockaddr in addresses:
        sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                             socket.SOCK_STREAM)
        deadline.watch(sock)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(sockaddr)
        except FetchTimeout:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            if deadline.expired:
                raise deadline.error() from None
            last = exc
            continue
        if target.scheme == "https":
            context = ssl_context or _default_ssl_context()
            try:
                sock.settimeout(deadline.remaining())
                sock = context.wrap_socket(sock, server_hostname=target.host)
            except ssl.SSLCertVerificationError:
                sock.close()
                raise FetchFailed(f"TLS certificate of {target.host} did not verify") from None
            except OSError:
                sock.close()
                if deadline.expired:
                    raise deadline.error() from None
                raise FetchFailed(f"TLS handshake with {target.host} failed") from None
            deadline.watch(sock)
        return sock
    reason = type(last).__name__ if last is not None else "no address"
    raise FetchFailed(f"could not connect to {target.host} ({reason})")


_SSL_CONTEXT: Optional[ssl.SSLContext] = None


def _default_ssl_context() -> ssl.SSLContext:
    """Certificate-verifying client context (certifi's CA bundle when installed, as requests)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        try:
            import certifi

            cafile: Optional[str] = certifi.where()
        except ImportError:
            cafile = None
        _SSL_CONTEXT = ssl.create_default_context(cafile=cafile)
    return _SSL_CONTEXT


def _send(target: Target, sock: socket.socket, headers: Mapping[str, str],
          deadline: "_Deadline") -> http.client.HTTPResponse:
    """GET `target.path` over `sock`; return the response with its headers read.

    Raises:
        FetchFailed / FetchTimeout: connection or protocol failure.
    """
    conn = http.client.HTTPConnection(target.host, target.port)
    conn.sock = sock
    try:
        sock.settimeout(deadline.remaining())
        conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", target.host_header)
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        if not any(k.lower() == "user-agent" for k in headers):
            conn.putheader("User-Agent", _USER_AGENT)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        sock.settimeout(deadline.remaining())
        return conn.getresponse()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            raise deadline.error() from None
        raise FetchFailed(f"request to {target.host} failed ({type(exc).__name__})") from None


def _read_body(target: Target, response: http.client.HTTPResponse, sock: socket.socket,
               max_bytes: int, deadline: "_Deadline") -> bytes:
    """The whole body, streamed; cut off at `max_bytes` and at the deadline.

    Raises:
        ImageTooLarge, FetchTimeout, FetchFailed (connection closed before Content-Length).
    """
    too_large = ImageTooLarge(f"image at {target.host} is larger than the limit of {max_bytes} "
                              "bytes")
    declared = response.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    try:
        while True:
            sock.settimeout(deadline.remaining())
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            body.extend(chunk)
            if len(body) > max_bytes:
                raise too_large
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            raise deadline.error() from None
        raise FetchFailed(f"download from {target.host} failed ({type(exc).__name__})") from None
    if deadline.expired:
        raise deadline.error()
    if response.length:  # Content-Length promised more than arrived
        raise FetchFailed(f"download from {target.host} ended early")
    return bytes(body)


def fetch_url(url: str, *, max_bytes: int, timeout_s: float,
              headers: Optional[Mapping[str, str]] = None, allow_private: bool = False,
              max_redirects: int = 5, trusted_origins: Collection[str] = (),
              ssl_context: Optional[ssl.SSLContext] = None) -> bytes:
    """GET `url` and return its body (see the module docstring for every check).

    Args:
        headers: extra request headers; may carry credentials: sent (to the original origin
            only), never logged, never put in an error message.
        allow_private: skip the private-address rule (tests, on-prem: `VFM_ALLOW_PRIVATE_URLS`).
        max_redirects: most redirects followed; each hop is checked like the first URL.
        trusted_origins: origins (`scheme://host:port`) exempt from the private-address rule,
            e.g. the configured GCS endpoint (an emulator on loopback in tests).
        ssl_context: TLS client context (default: verifying, certifi's CA bundle).

    Raises:
        InvalidUrl, UrlSchemeNotAllowed, UrlCredentialsNotAllowed: see `parse_target`.
        UrlPrivateAddress: a hop's host is or resolves to a non-public address.
        UrlHostNotFound: DNS failure.  TooManyRedirects: more than `max_redirects` hops.
        FetchTimeout: `timeout_s` passed (DNS + connect + redirects + body).
        FetchFailed: connection/TLS/protocol error or a non-2xx status (the status is named).
        ImageTooLarge: body longer than `max_bytes` (declared or streamed).
    """
    started = time.perf_counter()
    trusted = {parse_target(origin).origin for origin in trusted_origins}
    deadline = _Deadline(timeout_s)
    current = url
    first_origin: Optional[str] = None
    request_headers: Dict[str, str] = dict(headers or {})
    try:
        for hop in range(max_redirects + 1):
            target = parse_target(current)
            first_origin = first_origin or target.origin
            if target.origin != first_origin:
                request_headers = {k: v for k, v in request_headers.items()
                                   if k.lower() not in _CREDENTIAL_HEADERS}
            checked = not allow_private and target.origin not in trusted
            if checked:
                check_host_name(target)
            addresses = resolve(target, deadline)
            if checked:
                check_addresses(target, [address for address, _ in addresses])
            sock = _connect(target, addresses, deadline, ssl_context)
            try:
                response = _send(target, sock, request_headers, deadline)
                location = response.getheader("Location")
                if response.status in _REDIRECTS and location:
                    if hop == max_redirects:
                        raise TooManyRedirects(f"more than {max_redirects} redirects")
                    current = urljoin(current, location.strip())
                    continue
                if not 200 <= response.status < 300:
                    raise FetchFailed(f"download from {target.host} failed with HTTP "
                                      f"{response.status}")
                body = _read_body(target, response, sock, max_bytes, deadline)
            finally:
                deadline.watch(None)
                sock.close()
            log.info("fetched %d bytes from %s in %.3fs (%d redirects)", len(body), target.host,
                     time.perf_counter() - started, hop)
            return body
        raise TooManyRedirects(f"more than {max_redirects} redirects")  # max_redirects < 0
    finally:
        deadline.cancel()
