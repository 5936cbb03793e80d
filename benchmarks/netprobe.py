"""Network probe used by the benchmarks; standard library only, so it runs in any of the
project's images, in pods, in local containers and in network namespaces.

    netprobe.py serve PORT                 echo lines on PORT, discard bytes on PORT+1
    netprobe.py rtt HOST PORT COUNT        round trips of a 32-byte line; prints JSON
    netprobe.py throughput HOST PORT SECS [STREAMS]
                                           send as fast as possible to PORT+1 on STREAMS
                                           connections at once (default 1); prints JSON
    netprobe.py dns SERVER NAME COUNT      UDP A queries; prints JSON latencies
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import struct
import sys
import threading
import time


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "count": len(ms),
        "p50_ms": round(pct(ms, 0.50), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def serve(port: int) -> None:
    def echo(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                conn.sendall(line)

    def sink(conn: socket.socket) -> None:
        with conn:
            total = 0
            while data := conn.recv(1 << 20):
                total += len(data)
            conn.sendall(str(total).encode())

    def listen(p: int, handler) -> None:  # type: ignore[no-untyped-def]
        srv = socket.create_server(("0.0.0.0", p), backlog=64)
        while True:
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=listen, args=(port + 1, sink), daemon=True).start()
    print("serving", flush=True)
    listen(port, echo)


def rtt(host: str, port: int, count: int) -> None:
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        line = b"x" * 31 + b"\n"
        for _ in range(20):  # warm-up
            s.sendall(line)
            f.readline()
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            s.sendall(line)
            f.readline()
            samples.append(time.perf_counter() - t0)
    print(json.dumps({"kind": "rtt", **summary(samples)}))


def one_stream(host: str, port: int, seconds: float, out: list[tuple[int, bool, float]]) -> None:
    """Bytes the server confirms it read, over the time until it confirmed; where a
    proxy (kubectl port-forward) drops the confirmation, bytes sent until it closed."""
    chunk = b"\0" * (1 << 16)
    with socket.create_connection((host, port + 1), timeout=30) as s:
        sent, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(64)
        elapsed = time.perf_counter() - t0
    ok = answer.strip().isdigit()
    out.append((int(answer) if ok else sent, ok, elapsed))


def cpu_times() -> tuple[int, int]:
    """The whole machine's (busy, total) CPU time in ticks, from /proc/stat: the same in a
    container or pod as on the host, so every process on a path is counted, wherever it
    runs (a tunnel's costs are spread over several)."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def throughput(host: str, port: int, seconds: float, streams: int = 1) -> None:
    """The sum over STREAMS parallel connections, over the longest one's time, and how
    busy the machine's CPUs were meanwhile."""
    results: list[tuple[int, bool, float]] = []
    busy0, total0 = cpu_times()
    threads = [
        threading.Thread(target=one_stream, args=(host, port, seconds, results))
        for _ in range(streams)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy1, total1 = cpu_times()
    if len(results) != streams:
        sys.exit(f"{streams - len(results)} of {streams} streams failed")
    total = sum(r[0] for r in results)
    cores = os.cpu_count() or 1
    print(
        json.dumps(
            {
                "kind": "throughput",
                "streams": streams,
                "mbit_s": round(total * 8 / max(r[2] for r in results) / 1e6, 1),
                "confirmed_by_server": all(r[1] for r in results),
                "cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
                "cores": cores,
            }
        )
    )


def dns(server: str, name: str, count: int) -> None:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    samples = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i in range(count + 10):
            qid = random.randrange(1 << 16)
            q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"
            t0 = time.perf_counter()
            s.sendto(q, (server, 53))
            while struct.unpack("!H", s.recv(4096)[:2])[0] != qid:
                pass
            if i >= 10:  # the first ten warm caches
                samples.append(time.perf_counter() - t0)
    print(json.dumps({"kind": "dns", **summary(samples)}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "serve":
        serve(int(args[0]))
    elif cmd == "rtt":
        rtt(args[0], int(args[1]), int(args[2]))
    elif cmd == "throughput":
        throughput(args[0], int(args[1]), float(args[2]), int(args[3]) if args[3:] else 1)
    elif cmd == "dns":
        dns(args[0], args[1], int(args[2]))
    else:
        sys.exit(__doc__)
