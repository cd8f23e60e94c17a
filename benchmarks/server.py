"""A deliberately cheap WebSocket server for the benchmarks.

Run as its own process (``python benchmarks/server.py``) so it never shares a
GIL with the client under test. It serves one connection at a time: the
benchmark runner starts one client at a time.

The request path picks the work: ``GET /<scenario>?n=<count>&id=<run id>``.

- ``recv`` scenarios: frames are built once per scenario (and deflate window
  size), concatenated into a block of at least 256 KiB and written with
  ``sendall`` as often as needed, followed by a Close frame.
- ``send`` scenarios: incoming frames are parsed, unmasked
  (``websockets.speedups.apply_mask`` when importable, about 25 GiB/s, else an
  integer XOR) and compared byte for byte with the expected payload. After the
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
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import time
import zlib
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scenarios import BY_NAME, Scenario, encoded_payloads

try:
    from websockets.speedups import apply_mask as _apply_mask

    def unmask(data, key: bytes) -> bytes:  # type: ignore[no-untyped-def]
        return _apply_mask(data, key)

    UNMASK_IMPL = "websockets.speedups"
except ImportError:  # pragma: no cover - depends on the environment

    def unmask(data, key: bytes) -> bytes:  # type: ignore[no-untyped-def]
        n = len(data)
        if not n:
            return b""
        k = (key * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")

    UNMASK_IMPL = "int-xor"

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BUFFER_SIZE = 4 * 1024 * 1024
IO_TIMEOUT = 60.0

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class ProtocolFailure(Exception):
    pass


def frame_header(opcode: int, length: int, rsv1: bool = False) -> bytes:
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return struct.pack("!BBH", b0, 126, length)
    return struct.pack("!BBQ", b0, 127, length)


def frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    return frame_header(opcode, len(payload), rsv1) + payload


def close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason)


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
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[1], headers, rest


def parse_extensions(header: str) -> List[Tuple[str, Dict[str, Optional[str]]]]:
    offers = []
    for offer in header.split(","):
        items = [item.strip() for item in offer.split(";")]
        if not items[0]:
            continue
        params: Dict[str, Optional[str]] = {}
        for item in items[1:]:
            if not item:
                continue
            key, eq, value = item.partition("=")
            params[key.strip().lower()] = value.strip().strip('"') if eq else None
        offers.append((items[0].lower(), params))
    return offers


def choose_deflate(header: str) -> Tuple[Optional[str], Optional[int]]:
    """Pick the first permessage-deflate offer we can honour.

    Returns the response extension header and the compressor's window bits.
    """
    for name, params in parse_extensions(header):
        if name != "permessage-deflate":
            continue
        response = ["permessage-deflate", "server_no_context_takeover"]
        wbits = 15
        if "server_max_window_bits" in params:
            value = params["server_max_window_bits"]
            if value is None or not value.isdigit() or not 8 <= int(value) <= 15:
                continue
            wbits = int(value)
            if wbits == 8:  # zlib cannot make a raw deflate stream with a 256-byte window
                continue
            response.append(f"server_max_window_bits={wbits}")
        return "; ".join(response), wbits
    return None, None


# --- frame building (recv scenarios) ----------------------------------------

_blocks: Dict[Tuple[str, Optional[int]], Tuple[bytes, int, List[bytes]]] = {}


def build_frames(scenario: Scenario, wbits: Optional[int]) -> Tuple[bytes, int, List[bytes]]:
    """(block, messages per block, the k frames) for a recv scenario."""
    key = (scenario.name, wbits)
    if key in _blocks:
        return _blocks[key]
    opcode = OP_TEXT if scenario.kind == "text" else OP_BINARY
    frames: List[bytes] = []
    for payload in encoded_payloads(scenario):
        if wbits is not None:
            # A fresh compressor per message: server_no_context_takeover.
            comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
            data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
            assert data.endswith(b"\x00\x00\xff\xff")
            frames.append(frame(opcode, data[:-4], rsv1=True))
        else:
            frames.append(frame(opcode, payload))
    one = b"".join(frames)
    reps = max(1, (256 * 1024) // len(one))
    result = (one * reps, scenario.k * reps, frames)
    _blocks[key] = result
    return result


# --- reading client frames ----------------------------------------------------


class Reader:
    """Parses masked client frames from a socket, yielding whole messages.

    Data is read with ``recv_into`` into one reusable buffer (4 MiB, grown
    for bigger frames); each payload is unmasked straight out of it, so the
    only copies are the kernel's and the unmasking itself.
    """

    def __init__(self, sock: socket.socket, initial: bytes, inflate: bool) -> None:
        self.sock = sock
        self.initial = initial
        self.inflater = zlib.decompressobj(-15) if inflate else None
        self.bytes_in = 0

    def frames(self) -> Iterator[Tuple[int, int, bytes]]:
        """Yield (b0, opcode, unmasked payload) per frame; returns on EOF."""
        recv_into = self.sock.recv_into
        buf = bytearray(max(BUFFER_SIZE, len(self.initial)))
        view = memoryview(buf)
        end = len(self.initial)
        buf[:end] = self.initial
        start = 0
        while True:
            while True:
                avail = end - start
                if avail < 2:
                    need = 2
                    break
                b0 = buf[start]
                b1 = buf[start + 1]
                length = b1 & 0x7F
                h = 6
                if length == 126:
                    h = 8
                    if avail < h:
                        need = h
                        break
                    length = (buf[start + 2] << 8) | buf[start + 3]
                elif length == 127:
                    h = 14
                    if avail < h:
                        need = h
                        break
                    length = int.from_bytes(buf[start + 2 : start + 10], "big")
                if not b1 & 0x80:
                    raise ProtocolFailure("unmasked client frame")
                need = h + length
                if avail < need:
                    break
                key = buf[start + h - 4 : start + h]
                payload = unmask(view[start + h : start + need], key)
                start += need
                yield b0, b0 & 0x0F, payload
            # Make room for `need` bytes from `start`, then read.
            if start == end:
                start = end = 0
            elif start + need > len(buf):
                kept = end - start
                if need > len(buf):
                    view.release()
                    old = buf
                    buf = bytearray(max(need, 2 * len(buf)))
                    buf[:kept] = old[start:end]
                    view = memoryview(buf)
                else:
                    buf[:kept] = view[start:end]
                start, end = 0, kept
            got = recv_into(view[end:])
            if not got:
                return
            end += got
            self.bytes_in += got

    def messages(self) -> Iterator[Tuple[int, bytes]]:
        """Yield (opcode, payload) for whole data messages and control frames."""
        parts: List[bytes] = []
        first_opcode = 0
        compressed = False
        for b0, opcode, payload in self.frames():
            if opcode >= 8:
                yield opcode, payload
                continue
            if opcode != OP_CONT:
                first_opcode = opcode
                compressed = bool(b0 & 0x40)
                parts = []
            parts.append(payload)
            if b0 & 0x80:
                message = parts[0] if len(parts) == 1 else b"".join(parts)
                parts = []
                if compressed:
                    if self.inflater is None:
                        raise ProtocolFailure("compressed frame without permessage-deflate")
                    message = self.inflater.decompress(message + b"\x00\x00\xff\xff")
                yield first_opcode, message


# --- connection handling ------------------------------------------------------


def finish(sock: socket.socket, reader: Reader, report: Dict, answered: bool) -> None:
    """Read until the client's Close (answering it unless we sent ours first)."""
    for opcode, payload in reader.messages():
        if opcode == OP_CLOSE:
            report["close_code"] = (
                struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            )
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
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
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
                    report["close_code"] = (
                        struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    )
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
                    report["close_code"] = (
                        struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    )
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
    import random

    for name in ("send_binary_16", "send_binary_1m"):
        scenario = BY_NAME[name]
        payloads = encoded_payloads(scenario)
        rng = random.Random(1)
        frames = []
        for p in payloads:
            key = rng.randbytes(4)
            hdr = bytearray(frame_header(OP_BINARY, len(p)))
            hdr[1] |= 0x80
            frames.append(bytes(hdr) + key + unmask(p, key))
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
