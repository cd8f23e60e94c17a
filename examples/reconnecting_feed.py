"""A feed that survives dropped connections: WebSocketApp.run_forever(reconnect=True).

    python examples/reconnecting_feed.py --local --count 10
    python examples/reconnecting_feed.py wss://example.org/feed

With --local, a lomond.testing.LocalServer sends numbered updates and
drops the connection (no close handshake, like a network failure) after
every three, so you can watch the app back off and reconnect.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any, Iterator

from lomond import events
from lomond.handlers import WebSocketApp
from lomond.testing import LocalServer, ServerConnection


def flaky_feed(numbers: Iterator[int]) -> Any:
    """A local server handler: three updates, then the connection drops."""

    def handler(connection: ServerConnection) -> None:
        for _ in range(3):
            connection.send(json.dumps({"seq": next(numbers), "sent": time.time()}))
            try:  # wait 0.05 s, but stop at once if the client closes
                if connection.recv(timeout=0.05) is None:
                    return
            except TimeoutError:
                pass
        connection.abort()

    return handler


class Feed(WebSocketApp):
    """Subclass style: a method ``on_<event name>`` for each event to handle."""

    def __init__(self, url: str, count: int, **options: Any) -> None:
        super().__init__(url, **options)
        self.count = count
        self.received = 0

    def on_connected(self, event: events.Connected) -> None:
        print(f"connected to {event.url}")

    def on_text(self, event: events.Text) -> None:
        self.received += 1
        try:
            print(f"update #{event.json['seq']}")
        except (ValueError, KeyError, TypeError):  # another feed's format: show it as is
            print(f"update {event.text}")
        if self.count and self.received >= self.count:
            self.close()  # a close we asked for also ends the reconnecting

    def on_disconnected(self, event: events.Disconnected) -> None:
        print(f"disconnected: {event.reason}" + (" (graceful)" if event.graceful else ""))

    def on_back_off(self, event: events.BackOff) -> None:
        print(f"reconnecting in {event.delay:.2f} s")

    def on_connect_fail(self, event: events.ConnectFail) -> None:
        print(f"could not connect: {event.reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="a ws:// or wss:// URL of a real feed")
    parser.add_argument("--local", action="store_true", help="start a flaky local server")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages")
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds")
    args = parser.parse_args()
    if bool(args.local) == bool(args.url):
        parser.error("give a URL or --local")

    server = LocalServer(flaky_feed(itertools.count(1))).start() if args.local else None
    feed = Feed(server.url if server else args.url, args.count,
                proxies={} if server else None)
    # Waits between attempts grow from min_wait to max_wait (with random
    # jitter); the demo server is local, so short waits are enough.
    waits = {"min_wait": 0.1, "max_wait": 0.5} if server else {}
    try:
        if args.seconds:
            # In a thread this time (start), so that the main thread can time it.
            feed.start(reconnect=True, **waits)
            feed.join(args.seconds)
            outcome = feed.stop()  # closes gracefully, or ends a back-off wait
            assert outcome is not None, "the feed did not stop"
        else:
            outcome = feed.run_forever(reconnect=True, **waits)  # in this thread
    except KeyboardInterrupt:
        return 130
    finally:
        if server:
            server.stop()
    print(f"received {feed.received} updates over {outcome.connections} connections")
    return 0 if outcome.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
