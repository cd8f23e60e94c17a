"""Runs one client on one scenario, in a fresh process, and prints one result.

Usage (``run.py`` does this): ``python client_runner.py '<json spec>'`` with
``client``, ``scenario``, ``url``, ``n`` and ``mode``:

- ``bench``: time the scenario, measure peak RSS, check every message.
- ``tracemalloc``: the same run under tracemalloc (peak of Python allocations).
- ``profile``: the same run under cProfile or pyinstrument (``profiler``),
  the report written to ``profile_out``.
- ``probe``: only report whether the client is available, with versions.

The last stdout line is ``RESULT <json>``.

Timing starts after the opening handshake (timed separately) and stops when
the last message was received (recv), when the server's acknowledgement of
the last message arrived (send), or when the last echo arrived (echo).

Checking: message ``i`` must equal ``payloads[i % k]`` exactly, type
included (``str`` for text, bytes-like for binary). Small messages are
appended to a list and compared after the clock stops; big ones (4 KiB and
more) are compared as they arrive, and the time spent comparing is measured
and subtracted, so verification never counts against a client.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import clients  # noqa: E402
from scenarios import BY_NAME, payloads  # noqa: E402


def current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    mod = clients.load(spec["client"])
    info = mod.probe()
    if spec["mode"] == "probe" or not info.get("available"):
        return info
    scenario = BY_NAME[spec["scenario"]]
    reason = mod.unsupported(scenario)
    if reason:
        return {"unsupported": reason}
    n = int(spec["n"])
    expected = payloads(scenario)
    k = len(expected)
    seq: List[Any] = []
    if scenario.mode in ("send", "echo"):
        seq = [expected[i % k] for i in range(n)]

    # The sink that receives every message.
    items: List[Any] = []
    big_state = [0, 0, 0.0]  # count, mismatches, seconds spent checking
    if scenario.big and scenario.mode != "send":
        perf = time.perf_counter

        def add(payload: Any) -> None:
            t = perf()
            if type(payload) is not type(expected[0]) and not (
                isinstance(payload, (bytearray, memoryview)) and isinstance(expected[0], bytes)
            ):
                big_state[1] += 1
            elif payload != expected[big_state[0] % k]:
                big_state[1] += 1
            big_state[0] += 1
            big_state[2] += perf() - t

    else:
        add = items.append

    profiler: Any = None
    mode = spec["mode"]
    if mode == "tracemalloc":
        import tracemalloc

    gc.collect()
    rss_base = current_rss_kib()
    maxrss_before = max_rss_kib()
    if mode == "tracemalloc":
        tracemalloc.start()
    t0 = time.perf_counter()
    conn = mod.connect(spec["url"], scenario)
    handshake = time.perf_counter() - t0
    acks: List[Any] = []
    if mode == "profile":
        if spec.get("profiler") == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
        else:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
    t1 = time.perf_counter()
    if scenario.mode == "recv":
        conn.recv(n, add)
    elif scenario.mode == "send":
        conn.send(seq)
        conn.recv(1, acks.append)
    else:
        conn.echo(seq, add)
    elapsed = time.perf_counter() - t1
    if profiler is not None:
        if spec.get("profiler") == "pyinstrument":
            profiler.stop()
        else:
            profiler.disable()
    maxrss_after = max_rss_kib()
    result: Dict[str, Any] = {
        "handshake_s": handshake,
        "elapsed_raw_s": elapsed,
        "verify_s": big_state[2],
        "elapsed_s": elapsed - big_state[2],
        "rss_base_kib": rss_base,
        "rss_peak_kib": maxrss_after,
        "rss_delta_kib": maxrss_after - max(rss_base, maxrss_before),
        "extensions": conn.extensions,
        # Which copy of lomond ran (compare.py checks it is the tree it asked for).
        "lomond_file": getattr(sys.modules.get("lomond"), "__file__", None),
    }
    if mode == "tracemalloc":
        result["tracemalloc_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
    t2 = time.perf_counter()
    try:
        conn.close()
    except Exception as exc:
        result["close_error"] = f"{type(exc).__name__}: {exc}"
    result["close_s"] = time.perf_counter() - t2

    # Verification (after the clock stopped).
    if scenario.mode == "send":
        want = f"{n} 0 {n * scenario.size}"
        got = acks[0] if acks else None
        result["count"] = n if got == want else 0
        result["mismatches"] = 0 if got == want else 1
        result["ack"] = got if isinstance(got, str) else repr(got)
        result["ack_expected"] = want
    elif items or not scenario.big:
        t = type(expected[0])
        bad = 0
        for i, payload in enumerate(items):
            ok_type = type(payload) is t or (
                t is bytes and isinstance(payload, (bytearray, memoryview))
            )
            if not ok_type or payload != expected[i % k]:
                bad += 1
        result["count"] = len(items)
        result["mismatches"] = bad
    else:
        result["count"] = big_state[0]
        result["mismatches"] = big_state[1]

    if profiler is not None:
        out = spec["profile_out"]
        if spec.get("profiler") == "pyinstrument":
            with open(out, "w") as f:
                f.write(profiler.output_text(unicode=True, color=False, show_all=False))
        else:
            import io
            import pstats

            profiler.dump_stats(out + ".pstats")
            buf = io.StringIO()
            stats = pstats.Stats(profiler, stream=buf).strip_dirs()
            buf.write(
                f"cProfile of {spec['client']} {info.get('version', '')} on {spec['scenario']} "
                f"n={n}, {time.strftime('%Y-%m-%d %H:%M')}: {elapsed:.3f}s under the profiler "
                "(client_runner.py:add is the harness's own checking, not the client)\n"
            )
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(25)
            with open(out, "w") as f:
                f.write(buf.getvalue())
        result["profile_out"] = out
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        result = run(spec)
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
