"""``lomond.tls.make_ssl_context``: Lomond 0.3.4's ``ssl_verify`` / ``ssl_cafile`` options.

Checked with real TLS handshakes on loopback against servers presenting
trustme certificates: one issued by the test CA for the loopback names, one
from an unrelated CA, one for the wrong host name.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest
from core_helpers import collect
from peers.tls import TLSBundle
from peers.ws_server import WSServer

from lomond import WebSocket, events
from lomond.tls import make_ssl_context


class TLSAcceptor:
    """A loopback server that completes (or fails) a TLS handshake and hangs up."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5.0)
        self.port = self.listener.getsockname()[1]
        self.outcomes: List[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
                    self.outcomes.append("ok")
            except (ssl.SSLError, OSError) as error:
                self.outcomes.append(f"failed: {error}")
                conn.close()

    def stop(self) -> None:
        # shutdown() wakes the blocked accept(); close() alone would not on Linux.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5.0)


@pytest.fixture
def acceptor(tls: TLSBundle) -> Iterator[Any]:
    started: List[TLSAcceptor] = []

    def start(cert: str = "default") -> TLSAcceptor:
        server = TLSAcceptor(tls.server_context(cert))  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def handshake(context: Optional[ssl.SSLContext], port: int, host: str = "localhost") -> bytes:
    """A real TLS handshake to ``port``; returns the first bytes the server sends."""
    assert context is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.recv(5)


# -- the defaults --------------------------------------------------------------------


def test_defaults_leave_the_context_to_the_connection() -> None:
    # None: the connection builds ssl.create_default_context() when needed.
    assert make_ssl_context() is None
    assert make_ssl_context(None, True, None) is None


def test_default_rejects_the_test_ca(wss_server: WSServer) -> None:
    # Through a real WebSocket: the default verifies against the system store,
    # which does not hold the test CA.
    websocket = WebSocket(wss_server.url_for("/echo"), ssl_context=make_ssl_context())
    assert _echo_once(websocket) is None


# -- ssl_cafile ------------------------------------------------------------------------


def test_cafile_trusts_that_ca(acceptor: Any, tls: TLSBundle) -> None:
    server = acceptor()
    assert handshake(make_ssl_context(ssl_cafile=tls.ca_file), server.port) == b"hello"


def test_cafile_accepts_a_path_object(acceptor: Any, tls: TLSBundle) -> None:
    server = acceptor()
    context = make_ssl_context(ssl_cafile=Path(tls.ca_file))
    assert handshake(context, server.port) == b"hello"


def test_cafile_still_checks_the_host_name(acceptor: Any, tls: TLSBundle) -> None:
    server = acceptor("wrong_host")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)hostname|match"):
        handshake(make_ssl_context(ssl_cafile=tls.ca_file), server.port)


def test_cafile_replaces_the_system_store(acceptor: Any, tls: TLSBundle) -> None:
    # Trusting only the unrelated CA: the test CA's certificate is refused,
    # and the context holds exactly the one CA from the file.
    server = acceptor()
    context = make_ssl_context(ssl_cafile=tls.other_ca_file)
    assert len(context.get_ca_certs()) == 1
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, server.port)


def test_missing_cafile_is_a_value_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match="does not exist"):
        make_ssl_context(ssl_cafile=str(missing))


def test_directory_cafile_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a file"):
        make_ssl_context(ssl_cafile=str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\n"])
def test_cafile_without_a_certificate_is_a_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="no usable CA certificate"):
        make_ssl_context(ssl_cafile=str(path))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions")
def test_unreadable_cafile_is_a_value_error(tmp_path: Path, tls: TLSBundle) -> None:
    path = tmp_path / "locked.pem"
    path.write_bytes(Path(tls.ca_file).read_bytes())
    path.chmod(0)
    try:
        with pytest.raises(ValueError):
            make_ssl_context(ssl_cafile=str(path))
    finally:
        path.chmod(0o600)


# -- ssl_verify=False --------------------------------------------------------------------


@pytest.mark.parametrize("cert", ["untrusted", "wrong_host", "expired"])
def test_no_verify_connects_to_any_certificate(acceptor: Any, cert: str) -> None:
    server = acceptor(cert)
    context = make_ssl_context(ssl_verify=False)
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
    assert handshake(context, server.port) == b"hello"


def test_verify_true_rejects_an_untrusted_certificate(acceptor: Any, tls: TLSBundle) -> None:
    server = acceptor("untrusted")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(make_ssl_context(ssl_verify=True, ssl_cafile=tls.ca_file), server.port)


# -- an explicit ssl_context -------------------------------------------------------------


def test_explicit_context_is_used_as_given(tls: TLSBundle) -> None:
    context = tls.client_context()
    assert make_ssl_context(context) is context
    assert make_ssl_context(ssl_context=context, ssl_verify=True, ssl_cafile=None) is context
    assert context.verify_mode == ssl.CERT_REQUIRED  # untouched


@pytest.mark.parametrize("options", [{"ssl_verify": False}, {"ssl_cafile": "ca.pem"}])
def test_explicit_context_with_other_options_is_a_value_error(
    tls: TLSBundle, options: Any
) -> None:
    if "ssl_cafile" in options:
        options = {"ssl_cafile": tls.ca_file}
    context = tls.client_context()
    with pytest.raises(ValueError, match="ssl_context"):
        make_ssl_context(context, **options)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_no_verify_with_a_cafile_is_a_value_error(tls: TLSBundle) -> None:
    with pytest.raises(ValueError, match="ssl_verify=False"):
        make_ssl_context(ssl_verify=False, ssl_cafile=tls.ca_file)


# -- argument types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"ssl_context": "context"},
        {"ssl_context": object()},
        {"ssl_verify": "no"},
        {"ssl_verify": 0},
        {"ssl_verify": None},
        {"ssl_cafile": 42},
        {"ssl_cafile": ["ca.pem"]},
    ],
    ids=repr,
)
def test_wrong_types_are_type_errors(options: Any) -> None:
    with pytest.raises(TypeError):
        make_ssl_context(**options)


def test_empty_cafile_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        make_ssl_context(ssl_cafile="")


# -- through a WebSocket (the context passed explicitly) ------------------------------------


def _echo_once(websocket: WebSocket) -> Optional[str]:
    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text("tls")
        elif isinstance(event, events.Text):
            websocket.close()

    run = collect(websocket, on_event)
    texts = run.of(events.Text)
    if not texts:
        assert run.names == ["connecting", "connect_fail"], run.names
        return None
    return str(texts[0].text)


def test_websocket_with_a_cafile_context(wss_server: WSServer, tls: TLSBundle) -> None:
    context = make_ssl_context(ssl_cafile=tls.ca_file)
    assert _echo_once(WebSocket(wss_server.url_for("/echo"), ssl_context=context)) == "tls"


def test_websocket_without_verification(ws_server_factory: Any, tls: TLSBundle) -> None:
    server = ws_server_factory(ssl_context=tls.server_context("untrusted"))
    url = server.url_for("/echo")
    assert _echo_once(WebSocket(url, ssl_context=make_ssl_context(ssl_cafile=tls.ca_file))) is None
    assert _echo_once(WebSocket(url, ssl_context=make_ssl_context(ssl_verify=False))) == "tls"
