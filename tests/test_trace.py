"""The ``trace=`` hook (Lomond 0.3.4): one small dict per step, never secrets or payloads."""

from __future__ import annotations

import logging
from typing import Any, Dict, List

import pytest
from core_helpers import collect
from peers.tls import TLSBundle
from peers.ws_server import WSServer

from lomond import WebSocket, events
from lomond.trace import Tracer

SECRET = "s3cr3t-pa55"
PAYLOAD = "payload-that-must-not-be-traced"


def stages(records: List[Dict[str, Any]]) -> List[str]:
    return [record["stage"] for record in records]


def test_every_step_of_a_tls_connection_is_traced(wss_server: WSServer, tls: TLSBundle) -> None:
    records: List[Dict[str, Any]] = []
    url = wss_server.url_for("/echo").replace("wss://", f"wss://user:{SECRET}@")
    websocket = WebSocket(url, ssl_context=tls.client_context(), trace=records.append)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.send_text(PAYLOAD)
            websocket.send_binary(PAYLOAD.encode())
        elif isinstance(event, events.Binary):
            websocket.close(1000, b"bye")

    run = collect(websocket, on_event, ping_rate=0)
    assert run.names[-1] == "disconnected"
    seen = stages(records)
    for stage in (
        "connect_start", "tcp_connected", "tls_wrapped", "upgrade_sent", "handshake_ready",
        "socket_send", "socket_recv", "send_text", "send_binary", "message_text",
        "message_binary", "close_requested", "close_received", "disconnected",
    ):
        assert stage in seen, (stage, seen)
    # The order of the connection's life.
    assert seen.index("connect_start") < seen.index("tls_wrapped") < seen.index("upgrade_sent")
    assert seen.index("handshake_ready") < seen.index("send_text") < seen.index("disconnected")
    assert seen[-1] == "disconnected"
    for record in records:
        assert {"stage", "url", "time", "elapsed"} <= set(record)
        assert record["url"] == wss_server.url_for("/echo")  # no credentials
        flat = repr(record)
        assert SECRET not in flat and PAYLOAD not in flat, record
        assert not any(isinstance(value, (bytes, bytearray)) for value in record.values())
    text = next(r for r in records if r["stage"] == "message_text")
    assert text["length"] == len(PAYLOAD)
    ready = next(r for r in records if r["stage"] == "handshake_ready")
    assert ready["status"] == 101
    close = next(r for r in records if r["stage"] == "close_requested")
    assert (close["code"], close["reason"]) == (1000, "bye")
    end = records[-1]
    assert end["graceful"] is True


def test_rejected_and_refused_connections_are_traced(ws_server: WSServer) -> None:
    records: List[Dict[str, Any]] = []
    collect(WebSocket(ws_server.url_for("/reject?status=403"), trace=records.append))
    assert "handshake_rejected" in stages(records)
    rejected = next(r for r in records if r["stage"] == "handshake_rejected")
    assert rejected["status"] == 403

    refused: List[Dict[str, Any]] = []
    collect(WebSocket("ws://127.0.0.1:9/", trace=refused.append))
    assert stages(refused) == ["connect_start", "connect_fail"]
    assert "refused" in refused[-1]["reason"].lower()


def test_a_raising_trace_callable_is_logged_and_ignored(
    ws_server: WSServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: Dict[str, Any]) -> None:
        raise RuntimeError("tracer bug")

    websocket = WebSocket(ws_server.url_for("/echo"), trace=broken)

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Ready):
            websocket.close()

    with caplog.at_level(logging.ERROR, logger="lomond.trace"):
        run = collect(websocket, on_event)
    assert run.names[-2:] == ["closed", "disconnected"]
    assert "tracer bug" in caplog.text


def test_trace_must_be_callable() -> None:
    with pytest.raises(TypeError):
        WebSocket("ws://127.0.0.1:9/", trace="print")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Tracer(42, "ws://x/")  # type: ignore[arg-type]
