"""Real peers for lomond's integration tests, all on loopback.

* :mod:`peers.ws_server`: a ``websockets`` server whose behaviour is picked by
  the request path, recording everything it receives;
* :mod:`peers.raw_server`: a raw TCP server running a per-test script, for
  fault injection (bad handshakes, illegal frames, resets, stalls);
* :mod:`peers.tls`: trustme CAs and certificates, server and client contexts;
* :mod:`peers.proxy`: the ``proxy.py`` HTTP CONNECT proxy in a subprocess.

``tests/conftest.py`` puts ``tests/`` on ``sys.path`` so this package imports
as ``peers`` (there is deliberately no ``tests/__init__.py``).
"""
