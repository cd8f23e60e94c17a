"""A deliberately cheap WebSocket server for the benchmarks.

Run as its own process (``python benchmarks/server.py``) so it never shares a
GIL with the client under test. It serves one connection at a time: the
benchmark runner starts one client at a time.

The request path picks the work: ``GET /<scenario>?n=<count>&id=<run id>``.

- ``recv`` scenarios: frames are built once per scenario (and deflate window
  size), concatenated into a block of at least 256 KiB and written with
  ``sendall`` as often as needed, followed by a Close frame.
- ``send`` scenarios: incoming frames are parsed and unmasked by lomond's own
  codec (:func:`lomond.reader.read_frames` on the server side, unmasking with
  :mod:`lomond.accel`) and compared byte for byte with the expected payload. After the
  n-th message the server answers with a text message
  ``"<count> <mismatches> <bytes>"`` which the client must receive.
- ``echo`` scenarios: every data message is sent straight back, unmasked.

permessage-deflate is accepted only in ``deflate`` scenarios, always with
``server_no_context_takeover`` (so one pre-compressed frame can be replayed)
and honouring a ``server_max_window_bits`` the client asks for. Other
scenarios decline every extension, whatever the client offers.

After each connection one JSON line goes to stdout: what the client offered,
what was accepted, what was sent and received, mismatches, the close code,
and the server's CPU time (to tell whether the server was the bottleneck).

Framing, the handshake's accept key, header parsing and the permessage-deflate
negotiation are lomond's (the repository's ``lomond`` package, put first on
``sys.path``, whatever lomond the clients under test import), so the server
holds no second implementation of RFC 6455.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this repository's lomond

from scenarios import BY_NAME, Scenario, encoded_payloads  # noqa: E402

from lomond import accel  # noqa: E402
from lomond.compression import Deflate, negotiate_server  # noqa: E402
from lomond.errors import ProtocolViolation  # noqa: E402
from lomond.frame import Frame, build_frame  # noqa: E402
from lomond.handshake import accept_for  # noqa: E402
from lomond.protocol import decode_close, encode_close  # noqa: E402
from lomond.reader import read_frames  # noqa: E402
from lomond.response import join_headers, parse_header_lines  # noqa: E402

UNMASK_IMPL = f"lomond.accel:{accel.IMPLEMENTATION}"
BUFFER_SIZE = 4 * 1024 * 1024
IO_TIMEOUT = 60.0

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class ProtocolFailure(Exception):
    pass


def frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """A server frame: lomond's writer, unmasked (RFC 6455 section 5.1)."""
    return build_frame(opcode, payload, rsv1=rsv1, mask=False)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(OP_CLOSE, encode_close(code, reason))


def close_code(payload: bytes) -> Optional[int]:
    """The code of the client's Close frame (``None`` if it has none), checked by lomond."""
    try:
        return decode_close(payload)[0]
    except ProtocolViolation as error:
        raise ProtocolFailure(f"invalid close frame: {error}") from None


# --- handshake -------------------------------------------------------------


def read_request(sock: socket.socket) -> Tuple[str, Dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ProtocolFailure("EOF during the upgrade request")
        data += chunk
        if len(data) > 65536:
            raise ProtocolFailure("upgrade request too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET":
        raise ProtocolFailure(f"bad request line {lines[0]!r}")
    return parts[1], join_headers(parse_header_lines(lines[1:])), rest


def choose_deflate(header: str) -> Tuple[Optional[str], Optional[int]]:
    """Answer the client's permessage-deflate offers with lomond's negotiation.

    Returns the response extension header and the compressor's window bits.
    ``server_no_context_takeover`` is always added (a server may, RFC 7692
    section 7.1.1.1), so one pre-compressed frame can be replayed; an offer
    holding the server to 8 bits is declined (zlib cannot honour it).
    """
    deflate, answer = negotiate_server([header])
    if deflate is None or answer is None or deflate.server_max_window_bits == 8:
        return None, None
    if not deflate.server_no_context_takeover:
        name, _, params = answer.partition(";")
        answer = f"{name}; server_no_context_takeover" + (f";{params}" if params else "")
    return answer, deflate.server_max_window_bits


# --- frame building (recv scenarios) ----------------------------------------

_blocks: Dict[Tuple[str, Optional[int]], Tuple[bytes, int, List[bytes]]] = {}


def build_frames(scenario: Scenario, wbits: Optional[int]) -> Tuple[bytes, int, List[bytes]]:
    """(block, messages per block, the k frames) for a recv scenario."""
    key = (scenario.name, wbits)
    if key in _blocks:
        return _blocks[key]
    opcode = OP_TEXT if scenario.kind == "text" else OP_BINARY
    frames: List[bytes] = []
    # Each message compressed on its own (server_no_context_takeover), by
    # lomond's server-side transform.
    deflate = (
        Deflate(server_no_context_takeover=True, server_max_window_bits=wbits, server_side=True)
        if wbits is not None
        else None
    )
    for payload in encoded_payloads(scenario):
        message = Frame(opcode, payload)
        if deflate is not None:
            message = deflate.encode(message)
        frames.append(frame(opcode, bytes(message.payload), rsv1=message.rsv1))
    one = b"".join(frames)
    reps = max(1, (256 * 1024) // len(one))
    result = (one * reps, scenario.k * reps, frames)
    _blocks[key] = result
    return result


# --- reading client frames ----------------------------------------------------


class Reader:
    """Reads masked client frames from a socket with lomond's server-side reader.

    :func:`lomond.reader.read_frames` (``expect_masked=True``) checks and
    unmasks each frame; permessage-deflate messages are inflated by
    lomond's :class:`~lomond.compression.Deflate` (server side).
    """

    def __init__(self, sock: socket.socket, initial: bytes, inflate: bool) -> None:
        self.sock = sock
        self.initial = initial
        self.deflate = (
            Deflate(server_no_context_takeover=True, server_side=True) if inflate else None
        )
        self.bytes_in = 0

    def frames(self) -> Iterator[Frame]:
        """Yield every client frame, unmasked and inflated; returns on EOF."""
        reader = read_frames(None, allow_rsv1=self.deflate is not None, expect_masked=True)
        decode = self.deflate.decode if self.deflate is not None else None
        # One reusable read buffer: the reader copies what it keeps (each
        # payload once, by the unmasking), so a read costs no allocation.
        recv_into = self.sock.recv_into
        buf = memoryview(bytearray(BUFFER_SIZE))
        data = memoryview(self.initial)
        while True:
            frames, error = reader.send(data)
            for item in frames:
                yield decode(item) if decode is not None else item
            if error is not None:
                raise ProtocolFailure(str(error))
            got = recv_into(buf)
            if not got:
                return
            data = buf[:got]
            self.bytes_in += got

    def messages(self) -> Iterator[Tuple[int, bytes]]:
        """Yield (opcode, payload) for whole data messages and control frames."""
        parts: List[bytes] = []
        first_opcode = 0
        try:
            for item in self.frames():
                opcode = item.opcode
                payload = bytes(item.payload)
                if opcode >= 8:
                    yield opcode, payload
                    continue
                if opcode != OP_CONT:
                    first_opcode = opcode
                    parts = []
                parts.append(payload)
                if item.fin:
                    message = parts[0] if len(parts) == 1 else b"".join(parts)
                    parts = []
                    yield first_opcode, message
        except ProtocolViolation as error:
            raise ProtocolFailure(str(error)) from None


# --- connection handling ------------------------------------------------------


def finish(sock: socket.socket, reader: Reader, report: Dict, answered: bool) -> None:
    """Read until the client's Close (answering it unless we sent ours first)."""
    for opcode, payload in reader.messages():
        if opcode == OP_CLOSE:
            report["close_code"] = close_code(payload)
            if not answered:
                sock.sendall(close_frame(1000))
            report["clean_close"] = True
            return
        if opcode == OP_PING:
            sock.sendall(frame(OP_PONG, payload))
        elif opcode in (OP_TEXT, OP_BINARY):
            report["unexpected_messages"] = report.get("unexpected_messages", 0) + 1


def handle(sock: socket.socket) -> Dict:
    report: Dict = {"clean_close": False}
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    try:
        target, headers, rest = read_request(sock)
        url = urlsplit(target)
        query = parse_qs(url.query)
        report["id"] = query.get("id", [""])[0]
        name = url.path.strip("/")
        report["scenario"] = name
        scenario = BY_NAME.get(name)
        n = int(query.get("n", ["0"])[0])
        report["n"] = n
        offer = headers.get("sec-websocket-extensions")
        report["offered"] = offer
        report["user_agent"] = headers.get("user-agent")
        key = headers.get("sec-websocket-key")
        if scenario is None or not key or headers.get("upgrade", "").lower() != "websocket":
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            raise ProtocolFailure(f"bad upgrade request for {target!r}")
        accepted, wbits = (None, None)
        if scenario.deflate and offer:
            accepted, wbits = choose_deflate(offer)
        report["accepted"] = accepted
        # Everything the scenario needs is built before the 101 response, so
        # the client's clock never waits for the server's preparations.
        if scenario.mode == "recv":
            block, per_block, frames = build_frames(scenario, wbits)
        expected = encoded_payloads(scenario)
        accept = accept_for(key.encode())
        response = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n"
        )
        if accepted:
            response += f"Sec-WebSocket-Extensions: {accepted}\r\n"
        sock.sendall((response + "\r\n").encode())
        reader = Reader(sock, rest, inflate=accepted is not None)
        if scenario.mode == "recv":
            if scenario.deflate and accepted is None:
                report["note"] = "client did not negotiate permessage-deflate; sent uncompressed"
            sent = 0
            sendall = sock.sendall
            while n - sent >= per_block:
                sendall(block)
                sent += per_block
            if n > sent:
                sendall(b"".join(frames[i % scenario.k] for i in range(sent, n)))
                sent = n
            report["sent"] = sent
            sock.sendall(close_frame(1000))
            report["send_done_s"] = time.perf_counter() - wall0
            finish(sock, reader, report, answered=True)
        elif scenario.mode == "send":
            k = scenario.k
            want = OP_TEXT if scenario.kind == "text" else OP_BINARY
            count = mismatches = nbytes = 0
            for opcode, payload in reader.messages():
                if opcode == OP_CLOSE:
                    report["close_code"] = close_code(payload)
                    sock.sendall(close_frame(1000))
                    report["clean_close"] = True
                    break
                if opcode == OP_PING:
                    sock.sendall(frame(OP_PONG, payload))
                    continue
                if opcode >= 8:
                    continue
                if opcode != want or payload != expected[count % k]:
                    mismatches += 1
                nbytes += len(payload)
                count += 1
                if count == n:
                    report["recv_done_s"] = time.perf_counter() - wall0
                    sock.sendall(frame(OP_TEXT, f"{count} {mismatches} {nbytes}".encode()))
            report.update(received=count, mismatches=mismatches, received_bytes=nbytes)
        elif scenario.mode == "echo":
            count = 0
            sendall = sock.sendall
            for opcode, payload in reader.messages():
                if opcode == OP_CLOSE:
                    report["close_code"] = close_code(payload)
                    sendall(close_frame(1000))
                    report["clean_close"] = True
                    break
                if opcode == OP_PING:
                    sendall(frame(OP_PONG, payload))
                elif opcode in (OP_TEXT, OP_BINARY):
                    sendall(frame(opcode, payload))
                    count += 1
            report["echoed"] = count
    except (OSError, ProtocolFailure, ValueError) as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    report["wall_s"] = time.perf_counter() - wall0
    report["cpu_s"] = time.process_time() - cpu0
    return report


def serve(host: str, port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(8)
    for scenario in BY_NAME.values():  # build every payload and frame block up front
        encoded_payloads(scenario)
        if scenario.mode == "recv":
            build_frames(scenario, 15 if scenario.deflate else None)
    print(f"PORT {listener.getsockname()[1]} unmask={UNMASK_IMPL}", flush=True)
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IO_TIMEOUT)
        try:
            report = handle(sock)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        print(json.dumps(report), flush=True)


def selftest() -> None:
    """Measure the server's receive path (parse + unmask + compare) alone.

    A forked child writes pre-masked frames into a loopback TCP connection
    as fast as it can; this process reads them exactly as a send scenario
    does. The CPU-bound capacity (messages / server CPU seconds) is what
    matters: the server must stay well above every client's send rate.
    """
    for name in ("send_binary_16", "send_binary_1m"):
        scenario = BY_NAME[name]
        payloads = encoded_payloads(scenario)
        frames = []
        for p in payloads:
            frames.append(build_frame(OP_BINARY, p, mask=True))
        block = b"".join(frames)
        reps = max(1, 4 * scenario.n // scenario.k)
        listener = socket.create_server(("127.0.0.1", 0))
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        listener.close()
        pid = os.fork()
        if pid == 0:  # the feeder
            b.close()
            for _ in range(reps):
                a.sendall(block)
            a.close()
            os._exit(0)
        a.close()
        reader = Reader(b, b"", inflate=False)
        start = time.perf_counter()
        cpu = time.process_time()
        count = bad = 0
        for _, payload in reader.messages():
            bad += payload != payloads[count % scenario.k]
            count += 1
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        os.waitpid(pid, 0)
        b.close()
        total = count * scenario.size
        print(
            f"{name}: {count:,} msgs, {bad} bad, {count / elapsed:,.0f} msg/s, "
            f"{total / elapsed / 1e6:,.0f} MB/s; server cpu {cpu:.2f}s / wall {elapsed:.2f}s, "
            f"so its CPU-bound capacity is {count / cpu:,.0f} msg/s, {total / cpu / 1e6:,.0f} MB/s "
            f"(unmask: {UNMASK_IMPL})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--selftest", action="store_true", help="measure the server's parse rate")
    args = parser.parse_args()
    if args.selftest:
        selftest()
        return
    try:
        serve(args.host, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
