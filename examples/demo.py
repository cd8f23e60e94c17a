"""lomond's Quickstart demo: talk to a local echo server and watch every event.

    python examples/demo.py

It needs nothing but lomond: the server is lomond.testing.LocalServer, a
small demo server that sends every message back, started here on a free port.
"""

from __future__ import annotations

import sys

from lomond import WebSocket
from lomond.testing import LocalServer


def main() -> int:
    with LocalServer() as server:  # listens on 127.0.0.1; stopped at the end of the block
        print(f"echo server listening on {server.url}")

        # Creating a WebSocket does no I/O. proxies={}: a local server is never
        # reached through a proxy, whatever HTTP_PROXY may say.
        websocket = WebSocket(server.url, proxies={})
        replies = 0
        graceful = False

        # Iterating over connect() opens the connection and yields events, in
        # order, until the connection is gone. ping_rate=0: no automatic pings,
        # we send our own below.
        for event in websocket.connect(ping_rate=0):
            if event.name == "connecting":
                print(f"connecting   to {event.url}")
            elif event.name == "connected":
                print("connected    TCP is up; asking the server to switch to WebSocket")
            elif event.name == "ready":
                print("ready        handshake done; sending three messages and a ping")
                websocket.send_text("Hello, WebSocket!")
                websocket.send_binary(b"\x00\x01\x02\xff")
                websocket.send_json(greeting="hello", numbers=[1, 2, 3])
                websocket.send_ping(b"are you there?")
            elif event.name == "text":
                print(f"text         {event.text!r}")
                if event.text.startswith("{"):
                    print(f"             as JSON: {event.json}")
                replies += 1
            elif event.name == "binary":
                print(f"binary       {event.data!r} ({len(event.data)} bytes)")
                replies += 1
            elif event.name == "pong":
                print(f"pong         {event.data!r}: the server answered our ping")
                replies += 1
            elif event.name == "closed":
                print(f"closed       the server answered our Close (code {event.code})")
            elif event.name == "disconnected":
                graceful = event.graceful
                print(f"disconnected graceful={event.graceful}")
            else:  # connect_fail, rejected, ...: just show them
                print(f"{event.name:<12} {event!r}")

            if replies == 4:  # every echo and the pong are in: say goodbye
                print("closing      sending Close (1000, 'goodbye')")
                websocket.close()
                replies += 1  # close only once

    print("done")
    return 0 if graceful else 1


if __name__ == "__main__":
    sys.exit(main())
