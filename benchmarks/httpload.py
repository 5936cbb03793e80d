"""A small HTTP/1.1 load generator (standard library only; runs inside a pod).

    python3 httpload.py latency HOST PORT COUNT HEADERS_JSON
        COUNT sequential GETs on one keep-alive connection → p50/p99 ms
    python3 httpload.py rps HOST PORT SECONDS CONNECTIONS HEADERS_JSON
        CONNECTIONS keep-alive connections, each sending GETs back to back → requests/s
    python3 httpload.py first HOST PORT SERVED_BY HEADERS_JSON TIMEOUT
        a GET every 10 ms (new connection each) until one is answered by SERVED_BY;
        prints the wall-clock time of that answer

Prints one JSON object. The server is the demo echo server (JSON body with served_by).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time


def request(host: str, headers: dict[str, str]) -> bytes:
    lines = ["GET /bench HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bytes:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return await reader.readexactly(length)


async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(host: str, port: int, count: int, headers: dict[str, str]) -> dict[str, object]:
    reader, writer = await connect(host, port)
    req = request(host, headers)
    for _ in range(20):  # warm-up
        await one(reader, writer, req)
    samples, served = [], set()
    for _ in range(count):
        start = time.perf_counter()
        body = await one(reader, writer, req)
        samples.append((time.perf_counter() - start) * 1000)
        served.add(json.loads(body)["served_by"])
    writer.close()
    return {
        "count": count,
        "p50_ms": round(pct(samples, 0.5), 3),
        "p99_ms": round(pct(samples, 0.99), 3),
        "served_by": sorted(served),
    }


async def rps(
    host: str, port: int, seconds: float, conns: int, headers: dict[str, str]
) -> dict[str, object]:
    req = request(host, headers)
    done = [0] * conns
    errors = [0]
    served: set[str] = set()
    stop_at = 0.0

    async def worker(i: int) -> None:
        reader, writer = await connect(host, port)
        body = await one(reader, writer, req)
        served.add(json.loads(body)["served_by"])
        while time.perf_counter() < stop_at:
            try:
                await one(reader, writer, req)
            except (OSError, asyncio.IncompleteReadError):
                errors[0] += 1
                writer.close()
                reader, writer = await connect(host, port)
                continue
            done[i] += 1
        writer.close()

    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(conns)))
    elapsed = time.perf_counter() - started
    return {
        "connections": conns,
        "seconds": round(elapsed, 2),
        "requests": sum(done),
        "rps": round(sum(done) / elapsed, 1),
        "errors": errors[0],
        "served_by": sorted(served),
    }


async def first(
    host: str, port: int, served_by: str, headers: dict[str, str], within: float
) -> dict[str, object]:
    req = request(host, headers)
    deadline = time.time() + within
    tries = 0
    while time.time() < deadline:
        tries += 1
        try:
            reader, writer = await asyncio.wait_for(connect(host, port), 1)
            body = await asyncio.wait_for(one(reader, writer, req), 2)
            writer.close()
            if json.loads(body)["served_by"] == served_by:
                return {"answered_at": time.time(), "tries": tries}
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        await asyncio.sleep(0.01)
    return {"answered_at": None, "tries": tries}


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "latency":
        result = latency(host, port, int(sys.argv[4]), json.loads(sys.argv[5]))
    elif mode == "rps":
        result = rps(host, port, float(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]))
    elif mode == "first":
        result = first(host, port, sys.argv[4], json.loads(sys.argv[5]), float(sys.argv[6]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(asyncio.run(result)), flush=True)


if __name__ == "__main__":
    main()
