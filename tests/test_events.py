"""Events: names, attributes, short reprs, JSON and immutability."""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
import pytest

from lomond import events
from lomond.response import Response

RESPONSE = Response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")

EXPECTED_NAMES = {
    events.Connecting: "connecting",
    events.ConnectFail: "connect_fail",
    events.Connected: "connected",
    events.Rejected: "rejected",
    events.Ready: "ready",
    events.Text: "text",
    events.Binary: "binary",
    events.Ping: "ping",
    events.Pong: "pong",
    events.Poll: "poll",
    events.Unresponsive: "unresponsive",
    events.ProtocolError: "protocol_error",
    events.Closing: "closing",
    events.Closed: "closed",
    events.Disconnected: "disconnected",
    events.BackOff: "back_off",
    events.UnknownMessage: "unknown",
}

# The samples are made at import: their times lie between these two readings.
BEFORE_SAMPLES = time.time()
SAMPLES = [
    events.Connecting("ws://example.com/"),
    events.ConnectFail("refused"),
    events.Connected("ws://example.com/"),
    events.Rejected(RESPONSE, "bad accept"),
    events.Ready(RESPONSE, None, frozenset()),
    events.Text("hi"),
    events.Binary(b"hi"),
    events.Ping(b"p"),
    events.Pong(b"p"),
    events.Poll(),
    events.Unresponsive(),
    events.ProtocolError("bad", False),
    events.Closing(1000, "bye"),
    events.Closed(1000, "bye"),
    events.Disconnected(),
    events.BackOff(1.5),
    events.UnknownMessage(b"?"),
]


@pytest.mark.parametrize(("cls", "name"), sorted(EXPECTED_NAMES.items(), key=lambda i: i[1]))
def test_names(cls: type, name: str) -> None:
    assert cls.name == name
    assert events.EVENT_TYPES[name] is cls


def test_every_event_type_is_listed() -> None:
    assert set(events.EVENT_TYPES.values()) == set(EXPECTED_NAMES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_has_name_and_received_time(event: events.Event) -> None:
    assert event.name == EXPECTED_NAMES[type(event)]
    assert isinstance(event, events.Event)
    assert BEFORE_SAMPLES <= event.received_time <= time.time()
    assert repr(event).startswith(type(event).__name__ + "(")


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_events_are_immutable(event: events.Event) -> None:
    with pytest.raises(AttributeError):
        event.received_time = 0  # type: ignore[misc]
    for field in attrs.fields(type(event)):
        with pytest.raises(AttributeError):
            setattr(event, field.name, None)
    with pytest.raises(AttributeError):
        event.new_attribute = 1  # type: ignore[attr-defined]


def test_received_time_is_now() -> None:
    before = time.time()
    event = events.Text("x")
    assert before <= event.received_time <= time.time()
    assert events.Text("x", received_time=12.5).received_time == 12.5


def test_large_text_repr_is_short() -> None:
    event = events.Text("x" * (16 * 1024 * 1024))
    text = repr(event)
    assert len(text) < 200
    assert "16777216" in text
    assert text.startswith("Text(text='xxxx")


def test_large_binary_repr_is_short() -> None:
    for event in (events.Binary(b"\0" * (16 * 1024 * 1024)), events.Ping(b"x" * 125),
                  events.Pong(b"y" * 125)):
        assert len(repr(event)) < 200


def test_short_values_are_shown_whole() -> None:
    assert repr(events.Text("hello")) == "Text(text='hello')"
    assert repr(events.Binary(b"\x00\x01")) == "Binary(data=b'\\x00\\x01')"
    assert repr(events.Closing(1000, "bye")) == "Closing(code=1000, reason='bye')"
    assert repr(events.Poll()) == "Poll()"


def test_text_json() -> None:
    event = events.Text(json.dumps({"a": [1, 2, {"b": None}]}))
    assert event.json == {"a": [1, 2, {"b": None}]}
    assert events.Text("3").json == 3


def test_text_json_invalid() -> None:
    with pytest.raises(ValueError):
        events.Text("{not json").json  # noqa: B018


def test_defaults() -> None:
    disconnected = events.Disconnected()
    assert disconnected.reason == "closed"
    assert disconnected.graceful is False
    assert events.Disconnected("x", graceful=True).graceful is True
    assert events.Connected("ws://h/").proxy is None
    error = events.ProtocolError("bad", True)
    assert error.code == 1002 and error.critical is True and error.error == "bad"


def test_attributes() -> None:
    ready = events.Ready(RESPONSE, "chat", frozenset({"permessage-deflate"}))
    assert ready.response is RESPONSE
    assert ready.protocol == "chat"
    assert ready.extensions == {"permessage-deflate"}
    rejected = events.Rejected(RESPONSE, "why")
    assert (rejected.response, rejected.reason) == (RESPONSE, "why")
    assert events.BackOff(2.0).delay == 2.0
    assert events.Closed(None, "").code is None


def test_response_repr_inside_ready_is_short() -> None:
    assert len(repr(events.Ready(RESPONSE, None, frozenset()))) < 200


def test_order_is_documented() -> None:
    doc = events.__doc__ or ""
    for line in (
        "Connecting",
        "ConnectFail",
        "Connected -> Rejected -> Disconnected",
        "Connected -> ConnectFail -> Disconnected",
        "[Closing | Closed] -> Disconnected",
    ):
        assert line in doc


def test_reasons_and_errors_are_never_clipped() -> None:
    reason = "could not connect to 127.0.0.1:9: Connection refused [Errno 111] and more"
    for event in (
        events.ConnectFail(reason),
        events.Disconnected(reason),
        events.Closing(1000, reason),
        events.Closed(1000, reason),
        events.ProtocolError(reason, True),
    ):
        assert repr(reason) in repr(event), event


def test_unknown_message_payload_is_clipped() -> None:
    assert "(1000 bytes)" in repr(events.UnknownMessage(b"x" * 1000))


@pytest.mark.parametrize(
    "make, cls, field, value",
    [(events.new_text, events.Text, "text", "héllo"),
     (events.new_binary, events.Binary, "data", b"\x00\xff")],
    ids=["text", "binary"],
)
def test_the_receive_paths_factories_make_what_init_makes(
    make: Any, cls: type, field: str, value: Any
) -> None:
    # The factories set slots directly (issue 21): every attrs field must be
    # set, so a field added to the class later fails here, not in a handler.
    made = make(value, 1234.5)
    built = cls(value, received_time=1234.5)
    assert type(made) is cls
    assert [a.name for a in attrs.fields(cls)] == ["received_time", field]
    for a in attrs.fields(cls):
        assert getattr(made, a.name) == getattr(built, a.name)
    assert repr(made) == repr(built)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(made, field, value)
