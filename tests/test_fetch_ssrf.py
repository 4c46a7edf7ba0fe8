"""SSRF-safe fetching (vfm_serving.inputs.http_fetch, inputs.gcs) against real loopback servers.

Every refused form is checked twice: the error code names the rule, and the target server's
connection log proves that no TCP connection was made. The deadline tests time a real server that
sends one byte per second.
"""

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from vfm_serving import errors
from vfm_serving.inputs import http_fetch
from vfm_serving.inputs.gcs import fetch_gcs
from vfm_serving.inputs.http_fetch import (
    address_block_reason,
    fetch_url,
    parse_legacy_ipv4,
    parse_target,
)
from vfm_serving.settings import ServingSettings

BODY = b"\x89PNG not really, but bytes" * 10
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class RecordingServer:
    """A real HTTP(S) server on a loopback address that logs every accepted TCP connection and
    every request (path, headers) before answering from `routes` (path -> handler)."""

    def __init__(self, host: str = "127.0.0.1", tls: Optional[ssl.SSLContext] = None) -> None:
        self.connections: List[Tuple] = []
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        self.routes: Dict[str, Route] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    send(self, 404, b"not found")
                else:
                    route(self)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                outer.connections.append(client_address)
                return True

        self.server = Server((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
         headers: Optional[Dict[str, str]] = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def ok(handler: http.server.BaseHTTPRequestHandler) -> None:
    send(handler, 200, BODY, {"Content-Type": "image/png"})


def redirect_to(location: str, status: int = 302) -> Route:
    return lambda h: send(h, status, b"", {"Location": location})


def trickle_body(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Headers at once, then one body byte per second (never finishes within a test)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    trickle(handler, b"x" * 1000)


def trickle_headers(handler: http.server.BaseHTTPRequestHandler) -> None:
    """The status line and headers themselves at one byte per second."""
    trickle(handler, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Slow: " + b"a" * 1000)


def trickle(handler: http.server.BaseHTTPRequestHandler, data: bytes) -> None:
    try:
        for i in range(len(data)):
            handler.wfile.write(data[i:i + 1])
            handler.wfile.flush()
            time.sleep(1.0)
    except OSError:
        pass  # the client hung up: what the deadline is for


@pytest.fixture()
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    srv.routes["/img.png"] = ok
    yield srv
    srv.close()


@pytest.fixture()
def server6() -> Iterator[RecordingServer]:
    try:
        srv = RecordingServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    srv.routes["/img.png"] = ok
    yield srv
    srv.close()


def fetch(url: str, **kwargs: object) -> bytes:
    options: Dict[str, object] = {"max_bytes": 10_000, "timeout_s": 5.0}
    options.update(kwargs)
    return fetch_url(url, **options)  # type: ignore[arg-type]


def refused(url: str, code: str, **kwargs: object) -> errors.ServingError:
    with pytest.raises(errors.ServingError) as info:
        fetch(url, **kwargs)
    assert info.value.code == code, (url, info.value.code, info.value.message)
    return info.value


# --- every SSRF form from the issue, refused, and no connection made --------------------------

LOOPBACK_FORMS = [
    "http://127.0.0.1:{p}/img.png",
    "http://127.0.0.2:{p}/img.png",
    "http://127.1:{p}/img.png",
    "http://localhost:{p}/img.png",
    "http://LocalHost:{p}/img.png",
    "http://localhost.:{p}/img.png",
    "http://img.localhost:{p}/img.png",
    "http://0.0.0.0:{p}/img.png",
    "http://0:{p}/img.png",
    "http://2130706433:{p}/img.png",
    "http://0x7f.1:{p}/img.png",
    "http://0x7f000001:{p}/img.png",
    "http://0177.0.0.1:{p}/img.png",
    "http://017700000001:{p}/img.png",
    "http://0x7F.0.0.1:{p}/img.png",
    "http://[::ffff:127.0.0.1]:{p}/img.png",
    "http://[::ffff:7f00:1]:{p}/img.png",
    "http://[::127.0.0.1]:{p}/img.png",
    "https://127.0.0.1:{p}/img.png",
]


@pytest.mark.parametrize("form", LOOPBACK_FORMS)
def test_loopback_forms_are_refused_without_connecting(server: RecordingServer, form: str) -> None:
    err = refused(form.format(p=server.port), "url_private_address")
    assert isinstance(err, errors.InvalidUrl) and err.http_status == 400
    assert server.connections == [] and server.requests == []


@pytest.mark.parametrize("form", ["http://[::1]:{p}/img.png", "http://[::]:{p}/img.png",
                                  "http://[0:0:0:0:0:0:0:1]:{p}/img.png"])
def test_ipv6_loopback_forms_are_refused_without_connecting(server6: RecordingServer,
                                                            form: str) -> None:
    refused(form.format(p=server6.port), "url_private_address")
    assert server6.connections == []


@pytest.mark.parametrize("form,code", [
    ("http://localhost@127.0.0.1:{p}/img.png", "url_credentials_not_allowed"),
    ("http://user:secret@127.0.0.1:{p}/img.png", "url_credentials_not_allowed"),
    ("http://@127.0.0.1:{p}/img.png", "url_credentials_not_allowed"),
    ("http://example.com\\@127.0.0.1:{p}/img.png", "url_credentials_not_allowed"),
    ("ftp://127.0.0.1:{p}/img.png", "url_scheme_not_allowed"),
    ("file:///etc/passwd", "url_scheme_not_allowed"),
    ("gopher://127.0.0.1:{p}/_GET", "url_scheme_not_allowed"),
    ("//127.0.0.1:{p}/img.png", "invalid_url"),
    ("http://127.0.0.1:99999/img.png", "invalid_url"),
    ("http://127.0.0.1:0/img.png", "invalid_url"),
    ("http://256.0.0.1:{p}/img.png", "invalid_url"),
    ("http://[fe80::1%25lo]:{p}/img.png", "invalid_url"),
    ("http://127.0.0.1:{p}/img.png\r\nX-Injected: 1", "invalid_url"),
    ("http://exa mple.com/img.png", "invalid_url"),
])
def test_scheme_credentials_and_malformed_urls(server: RecordingServer, form: str,
                                               code: str) -> None:
    # Refused even with private addresses allowed: these rules do not depend on the address.
    refused(form.format(p=server.port), code, allow_private=True)
    assert server.connections == []


def test_a_name_that_resolves_to_loopback_is_refused(server: RecordingServer) -> None:
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip("this machine's host name does not resolve")
    if not any(ipaddress.ip_address(a).is_loopback for a in addresses):
        pytest.skip("this machine's host name does not resolve to loopback")
    err = refused(f"http://{name}:{server.port}/img.png", "url_private_address")
    assert "resolves to a loopback address" in err.message
    assert server.connections == []
    # Allowed: fetched from the address that was checked.
    assert fetch(f"http://{name}:{server.port}/img.png", allow_private=True) == BODY


def test_no_second_lookup_connects_to_the_checked_address(server: RecordingServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the first answer is public, every later one loopback. The fetch must go to
    the public address it checked (unreachable here), never look the name up again."""
    real = socket.getaddrinfo
    calls: List[str] = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = "93.184.215.14" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(errors.FetchFailed):
        fetch(f"http://rebind.test:{server.port}/img.png", timeout_s=1.0)
    assert calls == ["rebind.test"] and server.connections == []


# --- allowed private URLs work -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["http://127.0.0.1:{p}/img.png", "http://localhost:{p}/img.png",
                                  "http://2130706433:{p}/img.png", "http://0x7f.1:{p}/img.png",
                                  "http://[::ffff:127.0.0.1]:{p}/img.png"])
def test_allow_private_fetches_loopback(server: RecordingServer, form: str) -> None:
    assert fetch(form.format(p=server.port), allow_private=True) == BODY
    path, headers = server.requests[-1]
    assert path == "/img.png" and headers["Accept-Encoding"] == "identity"


def test_allow_private_ipv6(server6: RecordingServer) -> None:
    assert fetch(f"http://[::1]:{server6.port}/img.png", allow_private=True) == BODY
    assert server6.requests[-1][1]["Host"] == f"[::1]:{server6.port}"


def test_host_header_and_target_encoding(server: RecordingServer) -> None:
    server.routes["/a b/é.png"] = ok
    server.routes["/a%20b/%C3%A9.png"] = ok
    assert fetch(f"http://localhost:{server.port}/a b/é.png?x=1 2#frag", allow_private=True) == BODY
    path, headers = server.requests[-1]
    assert path == "/a%20b/%C3%A9.png?x=1%202"
    assert headers["Host"] == f"localhost:{server.port}"


# --- redirects ----------------------------------------------------------------------------------


def test_redirect_to_another_loopback_port_is_refused() -> None:
    """A trusted origin (as the GCS endpoint is) redirecting to another loopback port: the hop is
    re-checked and refused, and the second server never sees a connection."""
    first, second = RecordingServer(), RecordingServer()
    try:
        second.routes["/img.png"] = ok
        first.routes["/r"] = redirect_to(f"{second.base}/img.png")
        refused(f"{first.base}/r", "url_private_address", trusted_origins=[first.base])
        assert len(first.requests) == 1 and second.connections == []
        # The same chain with private URLs allowed is followed.
        assert fetch(f"{first.base}/r", allow_private=True) == BODY
        assert [p for p, _ in second.requests] == ["/img.png"]
    finally:
        first.close()
        second.close()


def test_redirect_forms_are_checked_per_hop(server: RecordingServer) -> None:
    server.routes["/to-ftp"] = redirect_to("ftp://example.com/x")
    server.routes["/to-creds"] = redirect_to(f"http://u:p@127.0.0.1:{server.port}/img.png")
    server.routes["/to-decimal"] = redirect_to(f"http://2130706433:{server.port}/img.png")
    server.routes["/to-relative"] = redirect_to("/img.png", 307)
    trusted = [server.base]
    refused(f"{server.base}/to-ftp", "url_scheme_not_allowed", trusted_origins=trusted)
    refused(f"{server.base}/to-creds", "url_credentials_not_allowed", trusted_origins=trusted)
    refused(f"{server.base}/to-decimal", "url_private_address", trusted_origins=trusted)
    # A relative redirect stays on the trusted origin.
    assert fetch(f"{server.base}/to-relative", trusted_origins=trusted) == BODY


def test_redirect_cap(server: RecordingServer) -> None:
    for i in range(4):
        server.routes[f"/hop{i}"] = redirect_to(f"/hop{i + 1}", 301)
    server.routes["/hop4"] = ok
    assert fetch(f"{server.base}/hop0", allow_private=True, max_redirects=4) == BODY
    server.requests.clear()
    refused(f"{server.base}/hop0", "too_many_redirects", allow_private=True, max_redirects=3)
    assert [p for p, _ in server.requests] == ["/hop0", "/hop1", "/hop2", "/hop3"]
    refused(f"{server.base}/hop0", "too_many_redirects", allow_private=True, max_redirects=0)


def test_credentials_headers_stay_on_their_origin() -> None:
    first, second = RecordingServer(), RecordingServer()
    try:
        second.routes["/img.png"] = ok
        first.routes["/same"] = redirect_to("/img.png")
        first.routes["/img.png"] = ok
        first.routes["/other"] = redirect_to(f"{second.base}/img.png")
        auth = {"Authorization": "Bearer s3cret", "X-Trace": "1"}
        fetch(f"{first.base}/same", allow_private=True, headers=auth)
        assert first.requests[-1][1]["Authorization"] == "Bearer s3cret"
        fetch(f"{first.base}/other", allow_private=True, headers=auth)
        assert "Authorization" not in second.requests[-1][1]
        assert second.requests[-1][1]["X-Trace"] == "1"
    finally:
        first.close()
        second.close()


# --- total deadline and byte cap ------------------------------------------------------------------


@pytest.mark.parametrize("route", [trickle_body, trickle_headers])
def test_one_byte_per_second_is_cut_off_at_the_deadline(server: RecordingServer,
                                                        route: Route) -> None:
    server.routes["/slow"] = route
    started = time.monotonic()
    refused(f"{server.base}/slow", "fetch_timeout", allow_private=True, timeout_s=2.5)
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 3.0, elapsed


def test_deadline_covers_redirect_hops(server: RecordingServer) -> None:
    def slow_redirect(handler: http.server.BaseHTTPRequestHandler) -> None:
        time.sleep(0.8)
        send(handler, 302, b"", {"Location": "/slowhop"})

    server.routes["/slowhop"] = slow_redirect
    started = time.monotonic()
    refused(f"{server.base}/slowhop", "fetch_timeout", allow_private=True, timeout_s=2.0,
            max_redirects=10)
    assert 2.0 <= time.monotonic() - started < 2.5
    assert 2 <= len(server.requests) <= 3


def test_silent_server_times_out(server: RecordingServer) -> None:
    server.routes["/silent"] = lambda h: time.sleep(10)
    started = time.monotonic()
    refused(f"{server.base}/silent", "fetch_timeout", allow_private=True, timeout_s=1.0)
    assert 1.0 <= time.monotonic() - started < 1.5


def test_byte_cap(server: RecordingServer) -> None:
    server.routes["/big"] = lambda h: send(h, 200, b"x" * 5000)

    def chunked(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(10):
            handler.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    def lying(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"z" * 10)
        handler.close_connection = True

    server.routes["/chunked"] = chunked
    server.routes["/short"] = lying
    refused(f"{server.base}/big", "image_too_large", allow_private=True, max_bytes=4999)
    assert fetch(f"{server.base}/big", allow_private=True, max_bytes=5000) == b"x" * 5000
    refused(f"{server.base}/chunked", "image_too_large", allow_private=True, max_bytes=5000)
    assert fetch(f"{server.base}/chunked", allow_private=True, max_bytes=10_000) == b"y" * 10_000
    refused(f"{server.base}/short", "fetch_failed", allow_private=True)


def test_http_errors_and_closed_ports(server: RecordingServer) -> None:
    err = refused(f"{server.base}/missing", "fetch_failed", allow_private=True)
    assert "HTTP 404" in err.message
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    refused(f"http://127.0.0.1:{closed}/x", "fetch_failed", allow_private=True)
    refused("http://no-such-host.invalid/x", "url_host_not_found")


# --- TLS: SNI and certificate check against the URL's host name, connecting to the checked IP -----


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_https_sni_and_hostname_check(tls_files: Tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    seen_sni: List[Optional[str]] = []
    server_ctx.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore
    srv = RecordingServer(tls=server_ctx)
    srv.routes["/img.png"] = ok
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        url = f"https://localhost:{srv.port}/img.png"
        assert fetch(url, allow_private=True, ssl_context=client_ctx) == BODY
        assert seen_sni[-1] == "localhost"
        # The certificate names localhost, not 127.0.0.1: checked against the URL's host.
        err = refused(f"https://127.0.0.1:{srv.port}/img.png", "fetch_failed",
                      allow_private=True, ssl_context=client_ctx)
        assert "certificate" in err.message
        # Not signed by a CA the default context trusts.
        refused(url, "fetch_failed", allow_private=True)
        # And without allow_private the name is refused before any connection.
        connections = len(srv.connections)
        refused(url, "url_private_address", ssl_context=client_ctx)
        assert len(srv.connections) == connections
    finally:
        srv.close()


# --- GCS: the configured endpoint is trusted, its redirects are not ------------------------------


def test_gcs_endpoint_is_trusted_but_its_redirects_are_checked(server: RecordingServer) -> None:
    other = RecordingServer()
    try:
        other.routes["/elsewhere.png"] = ok
        server.routes["/download/storage/v1/b/bkt/o/a.png"] = ok
        server.routes["/download/storage/v1/b/bkt/o/moved.png"] = redirect_to(
            f"{other.base}/elsewhere.png")
        settings = ServingSettings(gcs_endpoint=server.base, fetch_timeout_s=2.0)
        assert fetch_gcs("gs://bkt/a.png", "tok", settings) == BODY
        assert server.requests[-1][1]["Authorization"] == "Bearer tok"
        with pytest.raises(errors.UrlPrivateAddress):
            fetch_gcs("gs://bkt/moved.png", "tok", settings)
        assert other.connections == []
        relaxed = ServingSettings(gcs_endpoint=server.base, allow_private_urls=True)
        assert fetch_gcs("gs://bkt/moved.png", "tok", relaxed) == BODY
        assert "Authorization" not in other.requests[-1][1]  # the token stays with GCS
    finally:
        other.close()


def test_gcs_deadline_and_cap(server: RecordingServer) -> None:
    server.routes["/download/storage/v1/b/bkt/o/slow.png"] = trickle_body
    server.routes["/download/storage/v1/b/bkt/o/big.png"] = lambda h: send(h, 200, b"x" * 2000)
    settings = ServingSettings(gcs_endpoint=server.base, fetch_timeout_s=1.5, max_image_bytes=1000)
    started = time.monotonic()
    with pytest.raises(errors.FetchTimeout):
        fetch_gcs("gs://bkt/slow.png", None, settings)
    assert 1.5 <= time.monotonic() - started < 2.0
    with pytest.raises(errors.ImageTooLarge):
        fetch_gcs("gs://bkt/big.png", None, settings)


# --- the address classifier ---------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.0", "172.15.255.255",
    "172.32.0.0", "192.167.255.255", "223.255.255.255", "11.0.0.1",
    "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
])
def test_public_addresses(address: str) -> None:
    assert address_block_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address,reason", [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "private"), ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"), ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"), ("192.0.0.170", "reserved"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"),
    ("febf::1", "link-local"), ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"),
    ("ff02::1", "multicast"), ("2001:db8::1", "reserved"), ("fec0::1", "private"),
    ("100::1", "reserved"), ("64:ff9b:1::1", "private"),
    ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1: loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254: link-local"),
    ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1: private"),
    ("::ffff:0:127.0.0.1", "IPv4-translated 127.0.0.1: loopback"),
    ("::127.0.0.1", "IPv4-compatible 127.0.0.1: loopback"),
    ("64:ff9b::7f00:1", "NAT64 127.0.0.1: loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 169.254.169.254: link-local"),
    ("2002:7f00:1::1", "6to4 127.0.0.1: loopback"),
    ("2002:c0a8:101::", "6to4 192.168.1.1: private"),
    ("fe80::1%1", "link-local"),
])
def test_blocked_addresses(address: str, reason: str) -> None:
    assert address_block_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("host,address", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("017700000001", "127.0.0.1"),
    ("10.0x10.1", "10.16.0.1"), ("192.168.257", "192.168.1.1"), ("0", "0.0.0.0"),
    ("8.8.8.8.", "8.8.8.8"),
])
def test_legacy_ipv4_forms(host: str, address: str) -> None:
    assert parse_legacy_ipv4(host) == ipaddress.IPv4Address(address)
    assert socket.inet_ntoa(socket.inet_aton(host.rstrip("."))) == address  # as the OS reads it


def test_bare_hex_prefix_reads_as_zero_as_browsers_do() -> None:
    assert parse_legacy_ipv4("0x") == parse_legacy_ipv4("0x.0") == ipaddress.IPv4Address(0)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.example", "0x7g.1", "a1", "1e3"])
def test_names_are_not_ipv4_forms(host: str) -> None:
    assert parse_legacy_ipv4(host) is None


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3.4.5", "1.2.65536", "4294967296", "08.1.1.1",
                                  "1.2.3.0x100"])
def test_invalid_numeric_hosts(host: str) -> None:
    with pytest.raises(errors.InvalidUrl):
        parse_legacy_ipv4(host)


def test_parse_target_normalises() -> None:
    target = parse_target("HTTP://Bücher.Example:8080/p?q#f")
    assert (target.scheme, target.host, target.port) == ("http", "xn--bcher-kva.example", 8080)
    assert target.path == "/p?q" and target.origin == "http://xn--bcher-kva.example:8080"
    assert parse_target("https://[::1]/").host_header == "[::1]"
    assert parse_target("https://a.b/").port == 443


def test_error_classes_keep_their_parents() -> None:
    for cls in (errors.UrlSchemeNotAllowed, errors.UrlCredentialsNotAllowed,
                errors.UrlPrivateAddress):
        assert issubclass(cls, errors.InvalidUrl) and cls.http_status == 400
    for cls in (errors.UrlHostNotFound, errors.TooManyRedirects, errors.FetchTimeout):
        assert issubclass(cls, errors.FetchFailed) and cls.http_status == 400
    assert http_fetch.validate_url(" http://a/b ") == "http://a/b"
