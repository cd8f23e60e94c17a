"""Type checkers see each event's type through ``on()``, and the run options' types.

(Run with mypy if installed.)
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

SAMPLE = textwrap.dedent(
    """
    from lomond.events import Binary, Event, Ready, Text
    from lomond.handlers import WebSocketApp

    app = WebSocketApp("ws://example.org/")

    @app.on("text")
    def by_name(event: Text) -> None: ...

    @app.on(Text)
    def by_class(event: Text) -> int:
        return 1

    @app.on("*")
    def everything(event: Event) -> None: ...

    @app.on("ready")
    def base_class_handler(event: Event) -> None: ...

    app.on("binary", lambda event: event.data.hex())
    reveal_type(by_class)

    @app.on("text")  # error
    def wrong_by_name(event: Binary) -> None: ...

    @app.on(Ready)  # error
    def wrong_by_class(event: Text) -> None: ...

    app.on("pong", lambda event: event.text)  # error

    def dynamic(name: str) -> None:
        app.on(name, everything)
        app.on(name)(everything)
        app.on(name, by_name)  # error

    # One set of typed options for connect(), persist(), run_forever(), start().
    from lomond import WebSocket
    from lomond.persist import persist

    def options() -> None:
        app.start(reconnect=True, min_wait=1, max_wait=30.0, respect_retry_after=False)
        app.run_forever(poll=0.5, ping_timeout=None, close_timeout=2)
        app.run_forever(poll="5")  # error
        app.start(ping_rate=None)  # error
        app.start(pol=5)  # error
        persist(WebSocket("ws://x/"), close_timeout=1.5, handshake_timeout=3)
        persist(WebSocket("ws://x/"), close_timeout="x")  # error
        WebSocket("ws://x/").connect(ping_timeout="no")  # error

    # The hub takes the same options.
    from lomond.handlers import Hub

    def hub_options(hub: Hub) -> None:
        hub.add(app, reconnect=True, min_wait=1, ping_rate=20)
        hub.add(app, ping_rate="20")  # error
    """
)


def test_on_overloads_type_check(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    stdout, stderr, _status = api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(sample)]
    )
    lines = [line for line in stdout.splitlines() if line.strip()]
    matches = (re.match(r".*?:(\d+): error", line) for line in lines)
    errors = sorted(int(m.group(1)) for m in matches if m)
    expected = [n for n, ln in enumerate(SAMPLE.splitlines(), start=1) if ln.endswith("# error")]
    assert len(expected) == 10
    assert errors == expected, stdout + stderr
    assert any('Revealed type is "def (lomond.events.Text) -> int"' in ln for ln in lines), stdout
