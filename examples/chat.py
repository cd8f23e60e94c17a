"""A line-based chat: the app runs in a thread (app.start()), input in the main thread.

    python examples/chat.py --local --name alice       # start a local chat server
    python -m lomond --echo-server 0                   # (any server works; see below)
    python examples/chat.py ws://127.0.0.1:PORT/ --name bob

Type a line to send it; /quit or end of input (Ctrl-D) leaves. With --local,
a lomond.testing.LocalServer relays every message to every connection;
run more copies with its URL to chat between them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lomond.errors import WebSocketError
from lomond.handlers import WebSocketApp
from lomond.testing import LocalServer, ServerConnection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="a ws:// or wss:// URL of a chat server")
    parser.add_argument("--local", action="store_true", help="start a local chat server")
    parser.add_argument("--name", default="me", help="your name in the chat")
    args = parser.parse_args()
    if bool(args.local) == bool(args.url):
        parser.error("give a URL or --local")

    server = None
    if args.local:

        def relay(connection: ServerConnection) -> None:
            """Every message from one client goes to every client."""
            while True:
                message = connection.recv()
                if message is None:
                    return
                assert server is not None
                server.broadcast(message)

        server = LocalServer(relay).start()
        print(f"chat server listening on {server.url}", flush=True)

    app = WebSocketApp(server.url if server else args.url, proxies={} if server else None)

    @app.on("ready")
    def joined(event: Any) -> None:
        print(f"joined as {args.name}; type a message, /quit to leave", flush=True)

    @app.on("text")
    def show(event: Any) -> None:
        try:
            message = event.json
            print(f"[{message['name']}] {message['text']}", flush=True)
        except (ValueError, KeyError, TypeError):  # not from this example: as is
            print(event.text, flush=True)

    @app.on("disconnected")
    def left(event: Any) -> None:
        print(f"left the chat ({'graceful' if event.graceful else event.reason})", flush=True)

    failures = []

    @app.on("connect_fail")
    @app.on("rejected")
    def could_not_join(event: Any) -> None:
        # Handled here, so lomond's own one-line report of the failure is not printed.
        failures.append(event.reason)
        print(f"could not join the chat: {event.reason}", file=sys.stderr)

    # The app handles the connection in its own thread; this thread reads input.
    app.start()
    if not app.wait_ready(timeout=10):
        outcome = app.stop()
        if not failures:  # still connecting after 10 s, or it ended some other way
            reason = outcome.reason if outcome is not None else "timed out after 10 s"
            print(f"could not join the chat: {reason or 'timed out after 10 s'}",
                  file=sys.stderr)
        if server:
            server.stop()
        return 1
    try:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line == "/quit":
                break
            if not app.is_running:  # the connection is gone: say so, never drop a line
                print(f"not sent (left the chat: {app.outcome.reason}): {line}", file=sys.stderr)
                break
            if line:
                try:
                    app.send_json(name=args.name, text=line)  # send_* work from any thread
                except WebSocketError as error:  # dropped between the check and the send
                    print(f"not sent ({error}): {line}", file=sys.stderr)
                    break
    except KeyboardInterrupt:
        pass
    finally:
        outcome = app.stop()  # a graceful close; replies still arriving are printed
        if server:
            server.stop()
    return 0 if outcome is not None and outcome.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
