"""The ``lomond`` command (``python -m lomond``), run as a subprocess against real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest
from core_helpers import default_sigint
from peers.proxy import ProxyServer
from peers.tls import TLSBundle
from peers.ws_server import WSServer

from lomond import WebSocket, events
from lomond.cli import main
from lomond.testing import LocalServer, ServerConnection

TIMEOUT = 15.0
STAMP = r"\d\d:\d\d:\d\d\.\d{3}"

# The child must not pick up a proxy from the environment the tests run in.
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
ENV["PYTHONUNBUFFERED"] = "1"
# The subprocess imports this checkout's lomond, not a copy installed in the venv.
ENV["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parent.parent), *filter(None, [ENV.get("PYTHONPATH")])]
)


def run_cli(*args: str, stdin: str = "", timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lomond", *args],
        input=stdin.encode(),
        capture_output=True,
        timeout=timeout,
        env=ENV,
    )


def lines(data: bytes) -> List[str]:
    return data.decode().splitlines()


def assert_one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    err = lines(result.stderr)
    assert len(err) == 1, err
    assert "Traceback" not in result.stderr.decode()
    assert err[0].startswith("lomond: ")
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture
def echo_server() -> Any:
    with LocalServer() as server:
        yield server


# -- talking to a server ---------------------------------------------------------------


def test_piped_lines_are_sent_and_echoes_printed(echo_server: LocalServer) -> None:
    result = run_cli(echo_server.url, stdin="hello\nworld\n")
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert len(out) == 2
    assert re.fullmatch(rf"{STAMP} < hello", out[0]), out
    assert re.fullmatch(rf"{STAMP} < world", out[1]), out
    err = result.stderr.decode()
    assert f"lomond: connected to {echo_server.url}" in err
    assert "closed the connection (1000)" in err


def test_last_line_without_newline_and_no_timestamps(echo_server: LocalServer) -> None:
    result = run_cli("--no-timestamps", "-q", echo_server.url, stdin="one\r\n\ntwo ☃")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["< one", "< ", "< two ☃"]
    assert result.stderr == b""  # --quiet: no status lines


def test_json_is_pretty_printed(echo_server: LocalServer) -> None:
    message = json.dumps({"price": 1.5, "tags": ["a"]})
    result = run_cli("--json", "--no-timestamps", echo_server.url, stdin=f"{message}\nnot json\n")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        "< {",
        '    "price": 1.5,',
        '    "tags": [',
        '      "a"',
        "    ]",
        "  }",
        "< not json",
    ]


def test_binary_messages_are_shown_in_hex() -> None:
    def handler(connection: ServerConnection) -> None:
        connection.send(b"\x00\x01\xfe")
        connection.send(bytes(range(20)))

    with LocalServer(handler) as server:
        result = run_cli("--no-timestamps", "--no-stdin", server.url)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        "< <3 bytes binary> 00 01 fe",
        "< <20 bytes binary> 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ...",
    ]


def test_headers_and_subprotocols_reach_the_server() -> None:
    seen: List[Any] = []

    def handler(connection: ServerConnection) -> None:
        seen.append(dict(connection.headers))

    with LocalServer(handler) as server:
        result = run_cli(
            "--header", "X-Token: abc 123", "--header", "X-Other:2",
            "--protocol", "chat", "--protocol", "superchat", "--no-stdin", server.url,
        )
    assert result.returncode == 0, result.stderr
    assert seen[0]["x-token"] == "abc 123"
    assert seen[0]["x-other"] == "2"
    assert seen[0]["sec-websocket-protocol"] == "chat, superchat"


def test_compress_offers_permessage_deflate(ws_server: WSServer) -> None:
    result = run_cli("--compress", "--wait", "0.3", ws_server.url_for("/echo"), stdin="zip\n")
    assert result.returncode == 0, result.stderr
    assert "(permessage-deflate)" in result.stderr.decode()
    assert re.fullmatch(rf"{STAMP} < zip", lines(result.stdout)[0])
    assert "permessage-deflate" in ws_server.last.request_headers["Sec-WebSocket-Extensions"]


def test_verbose_shows_every_event(echo_server: LocalServer) -> None:
    result = run_cli("-v", echo_server.url, stdin="hi\n")
    assert result.returncode == 0
    err = result.stderr.decode()
    names = re.findall(rf"^{STAMP} \* (\w+)\(", err, re.MULTILINE)
    # The first automatic ping leaves right after Ready (issue 20), unless
    # stdin's end closed the connection first; its answer may come anywhere.
    if "Pong" in names:
        assert names.index("Pong") > names.index("Ready")
        names.remove("Pong")
    assert names == ["Connecting", "Connected", "Ready", "Poll", "Text", "Closed", "Disconnected"]
    assert re.search(rf"^{STAMP} > hi$", err, re.MULTILINE)


def test_server_close_codes_set_the_exit_status() -> None:
    def close_with(code: int) -> Any:
        return lambda connection: connection.close(code, "because")

    with LocalServer(close_with(1000)) as server:
        normal = run_cli("--no-stdin", server.url)
    with LocalServer(close_with(1008)) as server:
        policy = run_cli("--no-stdin", server.url)
    assert normal.returncode == 0
    assert "the server closed the connection (1000 because)" in normal.stderr.decode()
    assert policy.returncode == 1
    assert "the server closed the connection (1008 because)" in policy.stderr.decode()


def test_dropped_connection_exits_1(ws_server: WSServer) -> None:
    result = run_cli("--no-stdin", ws_server.url_for("/drop"))
    assert result.returncode == 1
    assert "lomond: disconnected: " in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_proxy_option(echo_server: LocalServer, http_proxy: ProxyServer) -> None:
    mark = http_proxy.mark()
    result = run_cli("-v", "--proxy", http_proxy.url, echo_server.url, stdin="via proxy\n")
    assert result.returncode == 0, result.stderr
    assert f"proxy='{http_proxy.url}'" in result.stderr.decode()
    assert lines(result.stdout)[0].endswith("< via proxy")
    http_proxy.wait_for_connect(port=echo_server.port, since=mark)


def test_ctrl_c_closes_gracefully_and_exits_130() -> None:
    codes: List[Optional[int]] = []

    def handler(connection: ServerConnection) -> None:
        connection.send("welcome")
        while connection.recv() is not None:
            pass
        codes.append(connection.close_code)

    with LocalServer(handler) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "lomond", "--no-stdin", server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, preexec_fn=default_sigint,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().decode().endswith("< welcome\n")
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()
    assert process.returncode == 130, err
    assert "closing (Ctrl-C again to quit at once)" in err.decode()
    assert "closed the connection (1000" in err.decode()
    assert "Traceback" not in err.decode()
    assert codes == [1000]


# -- failures: one line on stderr, no traceback ------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["ftp://example.com/"], "invalid URL: "),
        (["ws://"], "invalid URL: "),
        (["--header", "Host: evil", "ws://127.0.0.1:1/"], "Host header"),
        (["--proxy", "socks5://127.0.0.1:1", "ws://127.0.0.1:1/"], "proxy"),
    ],
    ids=["ftp-url", "empty-host", "reserved-header", "socks-proxy"],
)
def test_usage_errors_exit_2_with_one_line(args: List[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert_one_error_line(result, needle)
    assert result.stdout == b""


@pytest.mark.parametrize(
    "url, message",
    [
        ("localhost:8765", "the URL must start with ws:// or wss:// (or http://, https://) "
         "(got 'localhost:8765', with no scheme); did you mean 'ws://localhost:8765/'?"),
        ("ftp://example.org/feed", "the URL must start with ws:// or wss:// "
         "(or http://, https://) (got 'ftp')"),
        ("ws://127.0.0.1:99999/",
         "the port in 'ws://127.0.0.1:99999/' is out of range (0 to 65535): 99999"),
    ],
    ids=["no-scheme", "ftp", "port-out-of-range"],
)
def test_url_mistakes_say_what_to_type(url: str, message: str) -> None:
    # Issue 22: the URL that was probably meant; "invalid URL" said once.
    result = run_cli(url)
    assert result.returncode == 2
    assert assert_one_error_line(result) == f"lomond: invalid URL: {message}"


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")
def test_an_interactive_session_says_how_to_end_it(echo_server: LocalServer) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "lomond", "--no-timestamps", echo_server.url],
            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
        )
        os.close(follower)
        follower = -1
        try:
            assert process.stderr is not None and process.stdout is not None
            assert process.stderr.readline().decode().startswith("lomond: connected to ")
            hint = process.stderr.readline().decode().rstrip("\n")
            assert hint == (
                "lomond: type a line and press Enter to send it; Ctrl-D closes the "
                "connection, Ctrl-C interrupts"
            )
            os.write(leader, b"typed\n")
            assert process.stdout.readline() == b"< typed\n"
            os.write(leader, b"\x04")  # Ctrl-D: the end of input
            _, err = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0, err
    assert b"closed the connection (1000" in err


def test_piped_input_gets_no_typing_hint(echo_server: LocalServer) -> None:
    result = run_cli(echo_server.url, stdin="hi\n")
    assert result.returncode == 0
    assert b"Ctrl-D" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [[], ["--header", "no-colon", "ws://x/"], ["--echo-server", "1", "ws://x/"],
     ["--ping-rate", "soon", "ws://x/"]],
    ids=["no-url", "bad-header", "both-modes", "bad-number"],
)
def test_argparse_usage_errors_exit_2(args: List[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr.decode()
    assert result.stderr.decode().startswith("usage: lomond")


def test_refused_connection_exits_1() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli(f"ws://127.0.0.1:{port}/x")
    assert result.returncode == 1
    line = assert_one_error_line(result, f"could not connect to ws://127.0.0.1:{port}/x: ")
    assert "refused" in line.lower()


def test_unreachable_proxy_is_named_in_the_error_line() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli("--proxy", f"http://127.0.0.1:{port}", "ws://127.0.0.1:8765/")
    assert result.returncode == 1
    line = assert_one_error_line(
        result, f"could not connect to the proxy http://127.0.0.1:{port}: "
    )
    assert "refused" in line.lower() and line.endswith("(connecting to ws://127.0.0.1:8765/)")


def test_rejected_handshake_exits_1(ws_server: WSServer) -> None:
    result = run_cli(ws_server.url_for("/reject?status=403"))
    assert result.returncode == 1
    assert_one_error_line(result, "could not connect to ws://", "403")


def test_credentials_are_not_printed() -> None:
    result = run_cli("ws://alice:s3cret@127.0.0.1:1/")
    assert result.returncode == 1
    line = assert_one_error_line(result, "could not connect to ws://127.0.0.1:1/")
    assert "s3cret" not in line and "alice" not in line


def test_untrusted_certificate_fails_then_insecure_or_cafile_connects(
    wss_server: WSServer, tls: TLSBundle
) -> None:
    url = wss_server.url_for("/echo")
    untrusted = run_cli(url, stdin="secure\n")
    assert untrusted.returncode == 1
    assert_one_error_line(untrusted, f"could not connect to {url}: ", "certificate verify failed")

    insecure = run_cli("--insecure", "--wait", "0.3", url, stdin="secure\n")
    assert insecure.returncode == 0, insecure.stderr
    err = lines(insecure.stderr)
    assert err[0] == "lomond: warning: --insecure: the server's TLS certificate is NOT verified"
    assert f"lomond: connected to {url}" in err
    assert lines(insecure.stdout)[0].endswith("< secure")

    trusted = run_cli("--cafile", tls.ca_file, "--wait", "0.3", url, stdin="trusted\n")
    assert trusted.returncode == 0, trusted.stderr
    assert "warning" not in trusted.stderr.decode()
    assert lines(trusted.stdout)[0].endswith("< trusted")


# -- the echo server ----------------------------------------------------------------------


def test_echo_server_prints_its_url_echoes_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lomond", "--echo-server", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, preexec_fn=default_sigint,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        match = re.fullmatch(r"echo server listening on (ws://127\.0\.0\.1:(\d+)/)\n", first)
        assert match, first
        websocket = WebSocket(match.group(1), proxies={})
        received = []
        for event in websocket.connect(ping_rate=0, close_timeout=5):
            if isinstance(event, events.Ready):
                websocket.send_text("ping me")
                websocket.send_binary(b"\x01\x02")
            elif isinstance(event, (events.Text, events.Binary)):
                received.append(event.text if isinstance(event, events.Text) else event.data)
                if len(received) == 2:
                    websocket.close()
        assert received == ["ping me", b"\x01\x02"]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert b"Traceback" not in err


def test_echo_server_port_in_use_exits_1() -> None:
    with LocalServer() as server:
        result = run_cli("--echo-server", str(server.port))
    assert result.returncode == 1
    assert_one_error_line(result, f"cannot listen on 127.0.0.1:{server.port}")


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("lomond ")
    assert main(["--no-such-option"]) == 2
    assert main(["ftp://x/"]) == 2
    assert "invalid URL" in capsys.readouterr().err


def test_version_names_the_active_code_paths() -> None:
    from lomond import __version__, accel

    result = run_cli("--version")
    assert result.returncode == 0
    first, masking, utf8 = lines(result.stdout)
    assert first == f"lomond {__version__}"
    assert masking.startswith(f"masking: {accel.IMPLEMENTATION} (")
    assert utf8.startswith("utf-8: the interpreter's incremental UTF-8 codec (")
    assert result.stderr == b""


def test_version_says_why_masking_is_pure_python() -> None:
    # Issue 22: an install without a compiler (and without wsaccel) says so.
    code = (
        "import sys\n"
        "for name in ('lomond._speedups', 'wsaccel', 'wsaccel.xormask'):\n"
        "    sys.modules[name] = None  # as if not installed\n"
        "from lomond.cli import main\n"
        "sys.exit(main(['--version']))\n"
    )
    env = {k: v for k, v in ENV.items() if k != "LOMOND_NO_ACCEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[1] == (
        "masking: python (pure Python: sending is slower) [the C extension is not built with "
        "this install (no C compiler, or LOMOND_NO_EXTENSION); pip install \"lomond[accel]\" "
        "adds wsaccel]"
    )


def test_version_says_when_lomond_no_accel_is_set() -> None:
    result = subprocess.run([sys.executable, "-m", "lomond", "--version"], capture_output=True,
                            env={**ENV, "LOMOND_NO_ACCEL": "1"}, timeout=TIMEOUT)
    masking = lines(result.stdout)[1]
    assert masking.startswith("masking: python (pure Python: sending is slower) [LOMOND_NO_ACCEL")


def test_exit_is_prompt_while_stdin_is_still_open() -> None:
    # The server closes at once; the stdin reader thread, blocked reading an
    # open pipe, must not keep the process alive.
    with LocalServer(lambda connection: None) as server:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "lomond", server.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=ENV, preexec_fn=default_sigint,
        )
        try:
            status = process.wait(timeout=TIMEOUT)  # stdin is still open here
            elapsed = time.monotonic() - started
        finally:
            process.kill()
            err = process.communicate()[1].decode()
    assert status == 0, err
    assert elapsed < 5
    assert "the server closed the connection (1000)" in err
    assert "Traceback" not in err and "Fatal" not in err


def test_ctrl_c_while_the_handshake_hangs(ws_server: WSServer) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lomond", "-v", ws_server.url_for("/slow-handshake?delay=10")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=ENV, preexec_fn=default_sigint,
    )
    try:
        assert process.stderr is not None
        for line in iter(process.stderr.readline, b""):
            if b"* Connected(" in line:
                break
        else:
            raise AssertionError("the client never connected")
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 130
    assert time.monotonic() - started < 3
    assert "Traceback" not in err.decode()
    assert "could not connect" not in err.decode()
