"""Runs one code example from the documentation against a local server.

    python tests/docs_harness.py EXAMPLE.py MODE

Used by tests/test_docs_examples.py, one subprocess per example. The URL
``wss://example.org/feed`` in the example is replaced with the URL of a local
:class:`lomond.testing.LocalServer` that plays a small feed on every
connection: one JSON tick, then the echo of whatever the client sends until it
has been quiet for a moment, then a graceful close.

MODE ``run`` runs the example to its end; ``offline`` too, without replacing
the URL (the example makes no connection). MODE ``forever`` is for examples that
reconnect until stopped: the harness ends the process (exit status 0) when the
second connection arrives, which shows that the example did reconnect.

The last line printed is ``@@docs-harness connections=N stopped=0|1``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from lomond.testing import LocalServer, ServerConnection

MARKER_URL = "wss://example.org/feed"
QUIET = 0.3  # seconds without a message from the client before the server closes
STOP_AT = 2  # MODE "forever": stop when this connection arrives

lock = threading.Lock()
connections = 0


def report(stopped: bool) -> None:
    print(f"@@docs-harness connections={connections} stopped={int(stopped)}", flush=True)


def feed(connection: ServerConnection) -> None:
    global connections
    with lock:
        connections += 1
        if MODE == "forever" and connections >= STOP_AT:
            sys.stdout.flush()
            report(stopped=True)
            os._exit(0)  # the example would go on forever: this is its stop
    connection.send(json.dumps({"type": "ticker", "price": 42}))
    while True:
        try:
            message = connection.recv(timeout=QUIET)
        except TimeoutError:
            break
        if message is None:
            return
        connection.send(message)
    connection.close(1000, "end of the feed")


if __name__ == "__main__":
    path, MODE = Path(sys.argv[1]), sys.argv[2]
    with LocalServer(feed) as server:
        source = path.read_text(encoding="utf-8")
        if MODE != "offline":  # an offline example keeps its URL: it never connects
            source = source.replace(MARKER_URL, server.url)
        try:
            # As ``python example.py`` would run it: __file__ names the file
            # (an example may hand it to pytest.main), and a SystemExit of
            # 0 is a normal end.
            namespace = {"__name__": "__main__", "__file__": str(path)}
            exec(compile(source, str(path), "exec"), namespace)
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise
    report(stopped=False)
