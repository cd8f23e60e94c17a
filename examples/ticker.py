"""A price ticker with lomond.handlers.WebSocketApp: subscribe on connect, print each tick.

    python examples/ticker.py --local --count 10     # against a local demo server
    python examples/ticker.py wss://example.org/ticker --subscribe '{"op": "subscribe"}'

With --local, a lomond.testing.LocalServer plays the exchange: after the
client's subscribe message it sends a JSON tick every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any, Dict

from lomond.handlers import WebSocketApp
from lomond.testing import LocalServer, ServerConnection


def exchange(connection: ServerConnection) -> None:
    """The local server: wait for a subscribe message, then tick every 0.1 s."""
    request = connection.recv()
    if request is None:
        return
    symbol = json.loads(request).get("symbol", "LMD")
    price = 100.0
    for seq in range(1, 100_000):
        price = max(1.0, price + random.uniform(-0.5, 0.5))
        connection.send(json.dumps({"type": "tick", "symbol": symbol, "seq": seq,
                                    "price": round(price, 2)}))
        try:
            if connection.recv(timeout=0.1) is None:  # the client closed
                return
        except TimeoutError:  # nothing from the client: time for the next tick
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="a ws:// or wss:// URL of a real feed")
    parser.add_argument("--local", action="store_true", help="start a local demo exchange")
    parser.add_argument("--subscribe", default='{"type": "subscribe", "symbol": "LMD"}',
                        help="the JSON message sent once connected")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages")
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds")
    args = parser.parse_args()
    if bool(args.local) == bool(args.url):
        parser.error("give a URL or --local")

    server = LocalServer(exchange).start() if args.local else None
    url = server.url if server else args.url
    # A local server is never reached through a proxy (proxies={}); for a real
    # URL, None means "use HTTP(S)_PROXY from the environment, if set".
    app = WebSocketApp(url, proxies={} if server else None)
    received = 0
    started = time.monotonic()

    @app.on("ready")
    def subscribe(event: Any) -> None:
        print(f"connected to {url}, subscribing")
        app.send_json(json.loads(args.subscribe))

    @app.on("text")
    def show_tick(event: Any) -> None:
        nonlocal received
        received += 1
        try:
            tick: Dict[str, Any] = event.json
            print(f"{tick['symbol']:<6} {tick['price']:>9.2f}   (tick {tick['seq']})")
        except (ValueError, KeyError, TypeError):  # not one of our ticks: show it as is
            print(event.text)
        if args.count and received >= args.count:
            app.close()  # graceful: the loop ends once the server answers

    @app.on("poll")
    def check_time(event: Any) -> None:  # Poll events arrive every `poll` seconds
        if args.seconds and time.monotonic() - started >= args.seconds:
            app.close()

    @app.on("connect_fail")
    def could_not_connect(event: Any) -> None:
        # Handled here, so lomond's own one-line report of the failure is not printed.
        print(f"ticker failed: {event.reason}", file=sys.stderr)

    @app.on("disconnected")
    def bye(event: Any) -> None:
        print(f"disconnected ({'graceful' if event.graceful else event.reason}) "
              f"after {received} messages")

    try:
        # Runs the loop in this thread; Ctrl-C closes gracefully, then raises.
        outcome = app.run_forever(poll=0.1)
    except KeyboardInterrupt:
        return 130
    finally:
        if server:
            server.stop()
    return 1 if outcome.error is not None or not outcome.graceful else 0


if __name__ == "__main__":
    sys.exit(main())
