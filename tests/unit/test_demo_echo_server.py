"""The demo workload's echo server, run as a local process on free ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "platform" / "images" / "demo" / "echo_server.py"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server() -> Iterator[dict[str, int]]:
    ports = {
        "HTTP_PORT": free_port(socket.SOCK_STREAM),
        "TCP_PORT": free_port(socket.SOCK_STREAM),
        "UDP_PORT": free_port(socket.SOCK_DGRAM),
    }
    env = {**os.environ, "SERVED_BY": "unit-test-server", **{k: str(v) for k, v in ports.items()}}
    proc = subprocess.Popen(
        [sys.executable, "-u", str(SERVER)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("demo-echo unit-test-server:"), banner
        yield ports
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    # SIGTERM is a clean stop, not a crash.
    assert proc.returncode == 0


def test_http_answer_names_server_and_echoes_request(server: dict[str, int]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server['HTTP_PORT']}/some/path?q=1",
        data=b"12345",
        headers={"X-Dev": "alice"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["served_by"] == "unit-test-server"
    assert answer["method"] == "POST"
    assert answer["path"] == "/some/path?q=1"
    assert answer["headers"]["x-dev"] == "alice"
    assert answer["body_bytes"] == 5


def test_http_keep_alive_serves_several_requests_on_one_connection(
    server: dict[str, int],
) -> None:
    with (
        socket.create_connection(("127.0.0.1", server["HTTP_PORT"]), timeout=5) as conn,
        conn.makefile("rb") as reader,
    ):
        for i in range(3):
            conn.sendall(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert json.loads(reader.read(length))["path"] == f"/{i}"


def test_tcp_echo_prefixes_each_line(server: dict[str, int]) -> None:
    with (
        socket.create_connection(("127.0.0.1", server["TCP_PORT"]), timeout=5) as conn,
        conn.makefile("rb") as reader,
    ):
        conn.sendall(b"one\ntwo\n")
        assert reader.readline() == b"unit-test-server: one\n"
        assert reader.readline() == b"unit-test-server: two\n"


def test_udp_echo_answers_each_datagram(server: dict[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for payload in (b"first", b"second"):
            sock.sendto(payload, ("127.0.0.1", server["UDP_PORT"]))
            data, _ = sock.recvfrom(1024)
            assert data == b"unit-test-server: " + payload
