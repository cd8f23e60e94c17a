"""The ``lomond`` command: an interactive WebSocket client and a local echo server.

``python -m lomond URL`` connects, prints every incoming message with a
timestamp and sends each line read from stdin as a text message. At the end
of input (Ctrl-D, or the end of a pipe) it closes gracefully, printing the
replies that arrive before the close handshake completes.
``python -m lomond --echo-server [PORT]`` runs :class:`lomond.testing.LocalServer`.
``python -m lomond --version`` prints the version and which masking and
UTF-8 code paths are active (:func:`lomond.accel.describe`).

Exit status: 0 after a normal close (code 1000, 1001 or none), 1 when the
connection could not be made or ended abnormally, 2 for usage errors (bad
options or URL), 130 after Ctrl-C (the connection is still closed gracefully;
a second Ctrl-C drops it at once). See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import logging
import os
import ssl
import sys
import threading
import time
from typing import Dict, Optional, Sequence, TextIO, Tuple

from . import accel, events
from ._version import __version__
from .errors import WebSocketError
from .handshake import parse_url
from .options import DEFAULT_CONNECT
from .websocket import WebSocket

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_ECHO_PORT = 8765
CLOSE_TIMEOUT = 5.0
HEX_PREVIEW = 16  # bytes of a binary message shown in hex


def _header(value: str) -> Tuple[str, str]:
    name, colon, content = value.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return name.strip(), content.strip()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lomond`` command."""
    parser = argparse.ArgumentParser(
        prog="lomond",
        description="Talk to a WebSocket server: print incoming messages, send stdin lines.",
        epilog="Exit status: 0 normal close, 1 connection failed or ended abnormally, "
        "2 usage error, 130 interrupted (Ctrl-C).",
    )
    parser.add_argument("url", nargs="?", help="ws:// or wss:// URL to connect to")
    parser.add_argument(
        "--echo-server", nargs="?", type=int, const=DEFAULT_ECHO_PORT, metavar="PORT",
        help=f"run a local echo server on 127.0.0.1:PORT instead (default {DEFAULT_ECHO_PORT}, "
        "0 picks a free port) until Ctrl-C",
    )
    parser.add_argument("--json", action="store_true", help="pretty-print JSON messages")
    parser.add_argument(
        "--compress", action="store_true", help="offer permessage-deflate compression"
    )
    parser.add_argument(
        "--header", action="append", type=_header, default=[], metavar="'NAME: VALUE'",
        help="add a header to the upgrade request (repeatable)",
    )
    parser.add_argument(
        "--protocol", action="append", default=[], metavar="NAME",
        help="offer a subprotocol (repeatable)",
    )
    parser.add_argument(
        "--proxy", metavar="URL",
        help="HTTP proxy (http://[user:pass@]host:port); default: HTTP(S)_PROXY from the "
        "environment",
    )
    parser.add_argument(
        "--no-proxy", action="store_true", help="ignore proxies set in the environment"
    )
    parser.add_argument("--cafile", metavar="PEM", help="trust the CA certificates in this file")
    parser.add_argument(
        "--insecure", action="store_true",
        help="do NOT verify the server's TLS certificate or host name (testing only)",
    )
    parser.add_argument(
        "--ping-rate", type=float, default=DEFAULT_CONNECT.ping_rate, metavar="SECONDS",
        help=f"seconds between pings (default {DEFAULT_CONNECT.ping_rate:g}, 0 disables them); "
        "no pong for twice "
        "that long drops the connection",
    )
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS",
        help="at the end of input, keep printing messages for SECONDS before closing "
        "(for servers that may handle a Close before replying to earlier messages)",
    )
    parser.add_argument(
        "--no-stdin", action="store_true",
        help="do not read stdin: only print messages, until the server closes or Ctrl-C",
    )
    parser.add_argument(
        "--timestamps", action=argparse.BooleanOptionalAction, default=True,
        help="prefix messages with the time they arrived (default: on)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every event on stderr"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no status lines on stderr, only errors"
    )
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0,
        help="show the version, and which masking and UTF-8 code paths are active",
    )
    return parser


def version_text() -> str:
    """What ``lomond --version`` prints: the version, then the active code paths."""
    lines = [f"lomond {__version__}"]
    lines += [f"{name}: {text}" for name, text in accel.describe().items()]
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """``--version`` over several lines (argparse's own would re-wrap them)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit()


class Output:
    """Thread-safe, per-line flushed output: messages on stdout, status on stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.timestamps: bool = args.timestamps
        self.json: bool = args.json
        self.quiet: bool = args.quiet
        self.verbose: bool = args.verbose
        self.broken_pipe = False
        self._lock = threading.Lock()
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):  # never fail on unprintable text
                stream.reconfigure(errors="backslashreplace")

    def _stamp(self, when: float) -> str:
        if not self.timestamps:
            return ""
        return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d} "

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            if self.broken_pipe and stream is sys.stdout:
                return
            try:
                stream.write(text + "\n")
                stream.flush()
            except BrokenPipeError:
                # The reader went away (``lomond URL | head``): stop writing
                # there, and keep Python from complaining at exit.
                self.broken_pipe = True
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())

    def message(self, event: events.Event) -> None:
        """Print a Text or Binary event."""
        prefix = f"{self._stamp(event.received_time)}< "
        if isinstance(event, events.Text):
            body = event.text
            if self.json:
                try:
                    body = json.dumps(event.json, indent=2, ensure_ascii=False)
                except ValueError:
                    pass
            # Continuation lines line up under the first one.
            body = body.replace("\n", "\n" + " " * len(prefix))
        elif isinstance(event, events.Binary):
            data = event.data
            preview = data[:HEX_PREVIEW].hex(" ") + (" ..." if len(data) > HEX_PREVIEW else "")
            body = f"<{len(data)} bytes binary> {preview}".rstrip()
        else:
            return
        self._write(sys.stdout, prefix + body)

    def sent(self, text: str) -> None:
        if self.verbose:
            self._write(sys.stderr, f"{self._stamp(time.time())}> {text}")

    def event(self, event: events.Event) -> None:
        if self.verbose:
            self._write(sys.stderr, f"{self._stamp(event.received_time)}* {event!r}")

    def status(self, text: str) -> None:
        if not self.quiet:
            self._write(sys.stderr, f"lomond: {text}")

    def error(self, text: str) -> None:
        self._write(sys.stderr, f"lomond: {text}")


#: The end-of-input key: Ctrl-D on a POSIX terminal, Ctrl-Z then Enter on Windows.
END_OF_INPUT = "Ctrl-Z then Enter" if os.name == "nt" else "Ctrl-D"
#: Shown once connected when stdin is a terminal (not with --quiet or --no-stdin).
INTERACTIVE_HINT = (
    f"type a line and press Enter to send it; {END_OF_INPUT} closes the connection, "
    "Ctrl-C interrupts"
)


def _interactive() -> bool:
    """Whether stdin is a terminal (someone typing, rather than a pipe or a file)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def _connect_reason(url: str, reason: str) -> str:
    """The error line for a failed connection: the event's reason, in full.

    Only a reason about the target itself ("could not connect to HOST:PORT:
    ...") has its address replaced by the URL; anything else, such as the
    proxy that could not be reached, is printed as the event gave it.
    """
    if reason.startswith("could not connect to ") and ": " in reason:
        target = reason[len("could not connect to "):].split(": ", 1)[0]
        if " " not in target:  # "HOST:PORT", not "the proxy URL"
            return f"could not connect to {url}: {reason.split(': ', 1)[1]}"
        return f"{reason} (connecting to {url})"
    return f"could not connect to {url}: {reason}"


class Client:
    """One interactive session: the event loop in a worker thread, stdin in another."""

    def __init__(self, websocket: WebSocket, args: argparse.Namespace, output: Output) -> None:
        self.websocket = websocket
        self.args = args
        self.output = output
        self.url = websocket.url.url  # without credentials
        self.failure: Optional[str] = None
        self.close_code: Optional[int] = None
        self.interrupted = False
        self.done = threading.Event()

    def run(self) -> int:
        # The event loop runs in a worker so that Ctrl-C (delivered to the main
        # thread) does not tear the loop down but starts a graceful close. The
        # main thread waits on an Event: a Thread.join() interrupted by Ctrl-C
        # can wrongly mark the thread as finished on some Python versions.
        worker = threading.Thread(target=self._event_loop, name="lomond-events", daemon=True)
        try:
            # Started inside the try: the worker may connect (and the user
            # press Ctrl-C) before this thread runs its next line.
            worker.start()
            while not self.done.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.interrupted = True
            if not worker.is_alive() and not self.done.is_set():
                return EXIT_INTERRUPTED  # interrupted before the worker started
            self.output.status("closing (Ctrl-C again to quit at once)")
            self.websocket.close(1000, "bye")
            try:
                while not self.done.wait(0.2):
                    pass
            except KeyboardInterrupt:
                self.websocket.force_disconnect()
                self.done.wait(2.0)
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.failure is not None:
            return EXIT_FAILED
        return EXIT_OK

    def _fail(self, text: str) -> None:
        if self.failure is None:
            self.failure = text
            if not self.interrupted:  # after Ctrl-C, an abandoned connect is no news
                self.output.error(text)

    def _event_loop(self) -> None:
        try:
            self._handle_events()
        finally:
            self.done.set()

    def _handle_events(self) -> None:
        websocket, output = self.websocket, self.output
        connect = websocket.connect(
            ping_rate=self.args.ping_rate,
            ping_timeout=self.args.ping_rate * 2 or None,
            close_timeout=CLOSE_TIMEOUT,
        )
        for event in connect:
            output.event(event)
            if isinstance(event, (events.Text, events.Binary)):
                output.message(event)
                if output.broken_pipe:
                    websocket.close()
            elif isinstance(event, events.Ready):
                details = [f"subprotocol {event.protocol}"] if event.protocol else []
                details += sorted(event.extensions)
                extra = f" ({', '.join(details)})" if details else ""
                output.status(f"connected to {self.url}{extra}")
                if not self.args.no_stdin and _interactive():
                    output.status(INTERACTIVE_HINT)
                if not self.args.no_stdin:
                    threading.Thread(
                        target=self._read_stdin, name="lomond-stdin", daemon=True
                    ).start()
            elif isinstance(event, events.ConnectFail):
                self._fail(_connect_reason(self.url, event.reason))
            elif isinstance(event, events.Rejected):
                self._fail(_connect_reason(self.url, event.reason))
            elif isinstance(event, events.ProtocolError):
                self._fail(f"protocol error: {event.error}")
            elif isinstance(event, events.Unresponsive):
                self._fail(f"no answer to pings for {self.args.ping_rate * 2:g} s")
            elif isinstance(event, (events.Closing, events.Closed)):
                self.close_code = event.code
                who = "the server closed" if isinstance(event, events.Closing) else "closed"
                code = "no code" if event.code is None else str(event.code)
                reason = f" {event.reason}" if event.reason else ""
                line = f"{who} the connection ({code}{reason})"
                if event.code in (None, 1000, 1001):
                    output.status(line)
                else:  # an error code: shown even with --quiet, and exit status 1
                    self._fail(line)
            elif isinstance(event, events.Disconnected):
                if not event.graceful and self.failure is None and not self.interrupted:
                    self._fail(f"disconnected: {event.reason}")

    def _read_stdin(self) -> None:
        """Send each line of stdin as a text message; close at the end of input.

        ``os.read`` rather than ``sys.stdin``: this daemon thread may still be
        blocked here when the program exits, and must not hold the lock of a
        buffered stream that the interpreter flushes at shutdown.
        """
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        while fd >= 0:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                if not self._send(line.rstrip("\r")):
                    return
            if not chunk:
                break
        if pending and not self._send(pending):
            return
        if self.args.wait > 0:
            self.done.wait(self.args.wait)
        self.websocket.close(1000, "bye")

    def _send(self, line: str) -> bool:
        try:
            self.websocket.send_text(line)
        except WebSocketError:
            return False  # closing or closed: the event loop reports why
        self.output.sent(line)
        return True


def _ssl_context(args: argparse.Namespace, output: Output) -> Optional[ssl.SSLContext]:
    if not args.insecure and not args.cafile:
        return None
    context = ssl.create_default_context(cafile=args.cafile)
    if args.insecure:
        output.error("warning: --insecure: the server's TLS certificate is NOT verified")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _make_websocket(args: argparse.Namespace, output: Output) -> WebSocket:
    proxies: Optional[Dict[str, str]] = None
    if args.proxy:
        proxies = {"http": args.proxy, "https": args.proxy}
    elif args.no_proxy:
        proxies = {}
    return WebSocket(
        args.url,
        proxies=proxies,
        protocols=args.protocol,
        compress=args.compress,
        headers=args.header,
        ssl_context=_ssl_context(args, output) if parse_url(args.url).secure else None,
    )


def run_echo_server(port: int, verbose: bool) -> int:
    from .testing import LocalServer

    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s: %(message)s")
    server = LocalServer(port=port)
    try:
        server.start()
    except OSError as error:
        print(f"lomond: cannot listen on 127.0.0.1:{port}: {error.strerror or error}",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"echo server listening on {server.url}", flush=True)
    server.serve_forever()
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``lomond`` command with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.echo_server is not None:
        if args.url:
            parser.print_usage(sys.stderr)
            print("lomond: give a URL or --echo-server, not both", file=sys.stderr)
            return EXIT_USAGE
        return run_echo_server(args.echo_server, args.verbose)
    if not args.url:
        parser.print_usage(sys.stderr)
        print("lomond: a ws:// or wss:// URL is required", file=sys.stderr)
        return EXIT_USAGE
    output = Output(args)
    # Usage errors (a bad URL, header, proxy URL or CA file): one line, no traceback.
    try:
        parse_url(args.url)
    except ValueError as error:
        output.error(f"invalid URL: {error}")
        return EXIT_USAGE
    try:
        websocket = _make_websocket(args, output)
    except OSError as error:  # the CA file
        output.error(f"cannot load {args.cafile}: {error.strerror or error}")
        return EXIT_USAGE
    except (ValueError, TypeError, WebSocketError) as error:
        output.error(str(error))
        return EXIT_USAGE
    return Client(websocket, args, output).run()


__all__ = ["build_parser", "main", "version_text"]
