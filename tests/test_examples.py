"""examples/*.py run as a user would run them (subprocesses, local servers, no network)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

from core_helpers import refused_port
from peers.ws_server import WSServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 20.0
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
ENV["PYTHONUNBUFFERED"] = "1"
# The subprocess imports this checkout's lomond, not a copy installed in the venv.
ENV["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parent.parent), *filter(None, [ENV.get("PYTHONPATH")])]
)


def run_example(name: str, *args: str, stdin: str = "") -> List[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        input=stdin.encode(), capture_output=True, timeout=TIMEOUT, env=ENV,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    return result.stdout.decode().splitlines()


def test_demo_shows_the_whole_conversation() -> None:
    out = run_example("demo.py")
    assert re.fullmatch(r"echo server listening on ws://127\.0\.0\.1:\d+/", out[0])
    names = [line.split()[0] for line in out[1:] if not line.startswith(" ")]
    assert names == [
        "connecting", "connected", "ready", "poll", "text", "binary", "text", "pong",
        "closing", "closed", "disconnected", "done",
    ]
    assert "text         'Hello, WebSocket!'" in out
    assert "binary       b'\\x00\\x01\\x02\\xff' (4 bytes)" in out
    assert "             as JSON: {'greeting': 'hello', 'numbers': [1, 2, 3]}" in out
    assert "closed       the server answered our Close (code 1000)" in out
    assert "disconnected graceful=True" in out


def test_demo_needs_only_lomonds_own_dependencies() -> None:
    # The Quickstart promises the demo runs after a plain "pip install .": make
    # every test-only (and optional) package unimportable, then run it.
    code = (
        "import importlib.abc, runpy, sys\n"
        "BLOCKED = {'websockets', 'trustme', 'pytest', 'hypothesis', 'proxy', 'wsaccel'}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['demo.py']\n"
        f"runpy.run_path({str(EXAMPLES / 'demo.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT, env=ENV
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines()[-1] == "done"


def test_ticker_prints_count_ticks_then_closes() -> None:
    out = run_example("ticker.py", "--local", "--count", "5")
    assert out[0].startswith("connected to ws://127.0.0.1:")
    ticks = [line for line in out if re.fullmatch(r"LMD +\d+\.\d\d   \(tick \d+\)", line)]
    assert [int(re.search(r"tick (\d+)", t).group(1)) for t in ticks] == [1, 2, 3, 4, 5]
    assert out[-1] == "disconnected (graceful) after 5 messages"


def test_ticker_says_why_it_could_not_connect() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "ticker.py"), f"ws://127.0.0.1:{refused_port()}/"],
        capture_output=True, timeout=TIMEOUT, env=ENV,
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert re.fullmatch(r"ticker failed: could not connect to 127\.0\.0\.1:\d+: .+\n",
                        result.stderr.decode()), result.stderr


def test_ticker_stops_after_seconds() -> None:
    out = run_example("ticker.py", "--local", "--seconds", "0.5")
    ticks = [line for line in out if "(tick " in line]
    assert 1 <= len(ticks) <= 10  # a tick every 0.1 s
    assert out[-1].startswith("disconnected (graceful) after ")


def test_reconnecting_feed_reconnects_and_keeps_counting() -> None:
    out = run_example("reconnecting_feed.py", "--local", "--count", "7")
    updates = [int(line.split("#")[1]) for line in out if line.startswith("update #")]
    assert updates == [1, 2, 3, 4, 5, 6, 7]
    assert out.count("disconnected: server closed the connection without a close frame") == 2
    assert sum(line.startswith("reconnecting in ") for line in out) == 2
    assert sum(line.startswith("connected to ws://") for line in out) == 3
    assert out[-1] == "received 7 updates over 3 connections"


def test_reconnecting_feed_stops_after_seconds() -> None:
    out = run_example("reconnecting_feed.py", "--local", "--seconds", "1.5")
    match = re.fullmatch(r"received (\d+) updates over (\d+) connections", out[-1])
    assert match and int(match.group(1)) >= 3 and int(match.group(2)) >= 2, out


def test_chat_local_echoes_own_messages_and_quits() -> None:
    out = run_example(
        "chat.py", "--local", "--name", "alice", stdin="hello\nhow are you?\n/quit\nnot sent\n"
    )
    assert out[1] == "joined as alice; type a message, /quit to leave"
    assert out[2:] == ["[alice] hello", "[alice] how are you?", "left the chat (graceful)"]


def test_chat_between_two_clients() -> None:
    host = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "chat.py"), "--local", "--name", "alice"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )
    try:
        assert host.stdout is not None and host.stdin is not None
        first = host.stdout.readline().decode()
        match = re.fullmatch(r"chat server listening on (ws://\S+)\n", first)
        assert match, first
        assert host.stdout.readline().startswith(b"joined as alice")
        guest = run_example("chat.py", match.group(1), "--name", "bob", stdin="hi alice\n")
        assert guest[-2:] == ["[bob] hi alice", "left the chat (graceful)"]
        assert host.stdout.readline() == b"[bob] hi alice\n"
        out, err = host.communicate(b"bye bob\n", timeout=TIMEOUT)  # then end of input
    finally:
        host.kill()
    assert host.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["[alice] bye bob", "left the chat (graceful)"]


def test_chat_says_a_line_typed_after_the_server_left_was_not_sent(ws_server: WSServer) -> None:
    chat = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "chat.py"), ws_server.url_for("/close-after?n=1"),
         "--name", "bob"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )
    try:
        assert chat.stdout is not None and chat.stdin is not None
        assert chat.stdout.readline().startswith(b"joined as bob")
        chat.stdin.write(b"first\n")
        chat.stdin.flush()
        assert chat.stdout.readline() == b"[bob] first\n"
        assert chat.stdout.readline() == b"left the chat (graceful)\n"  # the server closed
        out, err = chat.communicate(b"second\n", timeout=TIMEOUT)
    finally:
        chat.kill()
    assert out == b""
    # Whether the app's run has ended yet when the line arrives decides the
    # wording; either way the line is reported as not sent, with a reason.
    assert err.decode().splitlines() in (
        ["not sent (left the chat: closed): second"],
        ["not sent (the websocket is closed): second"],
    )


def test_chat_says_why_it_could_not_join() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "chat.py"), f"ws://127.0.0.1:{refused_port()}/"],
        input=b"hello\n", capture_output=True, timeout=TIMEOUT, env=ENV,
    )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert re.fullmatch(r"could not join the chat: could not connect to 127\.0\.0\.1:\d+: .+\n",
                        err), err
