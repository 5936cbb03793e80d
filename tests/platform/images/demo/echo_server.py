"""Demo workload: says who answered, over HTTP, raw TCP and UDP.

HTTP (port 8080 by default) answers every path with one JSON object naming the
server; TCP (9000) echoes each line prefixed with the server's name; UDP (9001)
does the same per datagram. The name comes from SERVED_BY, else the hostname
(a pod's name). Standard library only: the image has no pip.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from typing import cast

SERVED_BY = os.environ.get("SERVED_BY") or socket.gethostname()
HTTP_PORT = int(os.environ.get("HTTP_PORT", "8080"))
TCP_PORT = int(os.environ.get("TCP_PORT", "9000"))
UDP_PORT = int(os.environ.get("UDP_PORT", "9001"))


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            answer = {
                "served_by": SERVED_BY,
                "method": method,
                "path": path,
                "headers": headers,
                "body_bytes": len(body),
            }
            payload = (json.dumps(answer) + "\n").encode()
            keep_alive = headers.get("connection", "").lower() != "close"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n".encode()
                + (b"" if keep_alive else b"Connection: close\r\n")
                + b"\r\n"
                + payload
            )
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, ValueError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def tcp_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(f"{SERVED_BY}: ".encode() + line)
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not subclass DatagramTransport; cast only.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(f"{SERVED_BY}: ".encode() + data, addr)


async def main() -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    http = await asyncio.start_server(http_handler, "0.0.0.0", HTTP_PORT)
    tcp = await asyncio.start_server(tcp_handler, "0.0.0.0", TCP_PORT)
    udp, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("0.0.0.0", UDP_PORT))
    print(
        f"demo-echo {SERVED_BY}: http :{HTTP_PORT}, tcp :{TCP_PORT}, udp :{UDP_PORT}",
        flush=True,
    )
    await stop
    http.close()
    tcp.close()
    udp.close()


if __name__ == "__main__":
    asyncio.run(main())
