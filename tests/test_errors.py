"""Exceptions: the hierarchy, messages, close codes."""

from __future__ import annotations

import pickle

import pytest

from lomond import errors
from lomond.errors import (
    CompressionParameterError,
    ConnectError,
    CriticalProtocolError,
    FrameBuildError,
    HandshakeError,
    InvalidRequest,
    PayloadTooLarge,
    ProtocolViolation,
    TransportFail,
    WebSocketClosed,
    WebSocketClosing,
    WebSocketError,
    WebSocketUnavailable,
)

HIERARCHY = {
    ConnectError: WebSocketError,
    HandshakeError: WebSocketError,
    CompressionParameterError: HandshakeError,
    InvalidRequest: HandshakeError,
    ProtocolViolation: WebSocketError,
    CriticalProtocolError: ProtocolViolation,
    PayloadTooLarge: ProtocolViolation,
    FrameBuildError: WebSocketError,
    TransportFail: WebSocketError,
    WebSocketUnavailable: WebSocketError,
    WebSocketClosing: WebSocketUnavailable,
    WebSocketClosed: WebSocketUnavailable,
}


@pytest.mark.parametrize(("cls", "parent"), HIERARCHY.items(), ids=lambda c: c.__name__)
def test_hierarchy(cls: type, parent: type) -> None:
    assert cls.__bases__[0] is parent
    assert issubclass(cls, WebSocketError)
    assert issubclass(cls, Exception)


def test_base_is_an_exception() -> None:
    assert WebSocketError.__bases__ == (Exception,)


def test_frame_build_error_is_also_a_value_error() -> None:
    assert issubclass(FrameBuildError, ValueError)


def test_closing_and_closed_are_siblings() -> None:
    assert not issubclass(WebSocketClosing, WebSocketClosed)
    assert not issubclass(WebSocketClosed, WebSocketClosing)


def test_every_exported_name_is_a_websocket_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), WebSocketError), name


@pytest.mark.parametrize("cls", [WebSocketError, *HIERARCHY], ids=lambda c: c.__name__)
def test_message_is_verbatim(cls: type) -> None:
    for message in ("{oops}", "{0} {} {name}", "100% sure %s %d", "plain"):
        error = cls(message)
        assert str(error) == message
        assert error.msg == message
        assert error.args[0] == message


def test_braces_do_not_crash_when_raised() -> None:
    with pytest.raises(WebSocketError, match=r"\{oops\}"):
        raise ConnectError("{oops}")


def test_protocol_violation_codes() -> None:
    assert ProtocolViolation("x").code == 1002
    assert ProtocolViolation("x", 1007).code == 1007
    assert CriticalProtocolError("x").code == 1002
    assert PayloadTooLarge("too big").code == 1009
    assert str(PayloadTooLarge("too big")) == "too big"


def test_catching_the_base_catches_unavailable_states() -> None:
    for cls in (WebSocketClosing, WebSocketClosed):
        with pytest.raises(WebSocketUnavailable):
            raise cls("nope")


def test_errors_can_be_pickled_for_multiprocessing() -> None:
    error = WebSocketClosed("closed {x}")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is WebSocketClosed
    assert str(copy) == "closed {x}"


def test_lomond_03_names_are_aliases() -> None:
    assert errors.ConnectFail is ConnectError
    assert errors.ProtocolError is ProtocolViolation
    with pytest.raises(errors.ConnectFail):
        raise ConnectError("refused")
    with pytest.raises(errors.ProtocolError):
        raise CriticalProtocolError("bad header")


def test_ws_key_is_the_guid_bytes() -> None:
    from lomond import constants

    assert constants.WS_KEY is constants.WS_GUID
    assert isinstance(constants.WS_KEY, bytes)
    assert constants.WS_KEY == b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_invalid_request_keeps_its_status_and_headers_when_pickled() -> None:
    error = InvalidRequest("version 8", 426, (("Sec-WebSocket-Version", "13"),))
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.status, copy.headers) == (
        InvalidRequest, "version 8", 426, (("Sec-WebSocket-Version", "13"),))
    assert InvalidRequest("bad").status == 400
