"""Port-forward throughput: gefyra-async's adapter vs `kubectl port-forward`, same pod, one stream.

    bash tests/platform/platform.sh up          # as root, once
    /var/cache/gefyra-async/venv/bin/python benchmarks/portforward_bench.py [--megabytes 200]

A pod (the platform's base image, python3) serves on its loopback port 7000, which only a
port-forward reaches: after a request head ``b"U" + size`` it reads that many bytes and
answers ``ok``; after ``b"D" + size`` it sends that many bytes. Each direction is timed
over one TCP stream, from the request head to the last byte (or the ``ok``), through
``adapters/portforward.open_port_forward`` and through the local port of a running
`kubectl port-forward`: both are anyio byte streams, so the same code drives both.
Prints MB/s (10^6 bytes) and the CPU seconds the client side used; writes no file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median

import anyio
import anyio.abc

from gefyra_async.adapters import kube_config, portforward

REPO = Path(__file__).resolve().parents[1]

PORT = 7000
CHUNK = 1 << 20
HEAD = struct.Struct("!cQ")
SERVER = r"""
import socket, struct, threading
zeros = memoryview(bytes(1 << 20))
def handle(conn):
    with conn:
        head = b""
        while len(head) < 9:
            more = conn.recv(9 - len(head))
            if not more:
                return
            head += more
        op, left = struct.unpack("!cQ", head)
        if op == b"U":
            buf = bytearray(1 << 20)
            while left > 0:
                n = conn.recv_into(buf, min(len(buf), left))
                if n == 0:
                    return
                left -= n
            conn.sendall(b"ok")
        else:
            while left > 0:
                n = min(left, len(zeros))
                conn.sendall(zeros[:n])
                left -= n
        conn.recv(1)  # until the client closes: no RST cuts the tail
server = socket.create_server(("127.0.0.1", 7000))
print("serving", flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


def platform_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(REPO / "tests/platform/platform.sh"), "env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


ENV = platform_env()
KUBECTL = [ENV["KUBECTL"], f"--kubeconfig={ENV['KUBECONFIG']}"]


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=180, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args[:4])} ... failed: {done.stderr.strip()}")
    return done.stdout


def pod_manifest(namespace: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sink", "namespace": namespace},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "sink",
                        "image": ENV["BASE_IMAGE"],
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-u", "-c", SERVER],
                    }
                ],
            },
        }
    )


async def transfer(stream: anyio.abc.ByteStream, op: bytes, size: int) -> float:
    """Seconds to move SIZE bytes over STREAM in direction OP (U: to the pod, D: from it)."""
    started = time.perf_counter()
    await stream.send(HEAD.pack(op, size))
    if op == b"U":
        chunk = bytes(CHUNK)
        sent = 0
        while sent < size:
            part = chunk[: min(CHUNK, size - sent)]
            await stream.send(part)
            sent += len(part)
        reply = b""
        while len(reply) < 2:
            reply += await stream.receive()
        assert reply == b"ok", reply
    else:
        received = 0
        while received < size:
            received += len(await stream.receive(CHUNK))
    return time.perf_counter() - started


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of PID (from /proc)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Opener = Callable[[], Awaitable[tuple[float, float]]]


async def measure(name: str, op: bytes, size: int, runs: int, once: Opener) -> None:
    seconds: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        elapsed, used = await once()
        seconds.append(elapsed)
        cpu.append(used)
    rates = sorted(size / s / 1e6 for s in seconds)
    direction = "to the pod  " if op == b"U" else "from the pod"
    print(
        f"{name:<24} {direction} {size / 1e6:.0f} MB: median {median(rates):7.1f} MB/s "
        f"(runs: {', '.join(f'{r:.1f}' for r in rates)}); client CPU {median(cpu):.2f} s/run",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200, help="bytes per run, in 10^6")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and direction")
    args = parser.parse_args()
    size, runs = args.megabytes * 1_000_000, args.runs

    namespace = f"pf-bench-{secrets.token_hex(3)}"
    kubectl("create", "namespace", namespace)
    try:
        kubectl("apply", "-f", "-", stdin=pod_manifest(namespace))
        kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/sink", "--timeout=120s")
        context = await kube_config.load_api_client(ENV["KUBECONFIG"], None)
        try:
            configuration = context.api.configuration
            for op in (b"U", b"D"):

                async def adapter(op: bytes = op) -> tuple[float, float]:
                    async with portforward.open_port_forward(
                        configuration, namespace=namespace, pod="sink", port=PORT
                    ) as stream:
                        cpu = cpu_seconds()
                        elapsed = await transfer(stream, op, size)
                        return elapsed, cpu_seconds() - cpu

                await measure("gefyra-async adapter", op, size, runs, adapter)
        finally:
            await context.api.close()

        command = [*KUBECTL, "-n", namespace, "port-forward", "pod/sink", f":{PORT}"]
        async with await anyio.open_process(command) as process:
            try:
                assert process.stdout is not None
                seen = b""
                with anyio.fail_after(30):
                    while not (found := re.search(rb"127\.0\.0\.1:(\d+) -> ", seen)):
                        seen += await process.stdout.receive()
                local_port = int(found.group(1))
                for op in (b"U", b"D"):

                    async def through_kubectl(op: bytes = op) -> tuple[float, float]:
                        async with await anyio.connect_tcp("127.0.0.1", local_port) as stream:
                            ours, theirs = cpu_seconds(), cpu_seconds(process.pid)
                            elapsed = await transfer(stream, op, size)
                            used = cpu_seconds() - ours + cpu_seconds(process.pid) - theirs
                            return elapsed, used

                    await measure("kubectl port-forward", op, size, runs, through_kubectl)
            finally:
                process.terminate()
        print(
            "client CPU: this process (and, for kubectl, kubectl's process) during the transfer",
            flush=True,
        )
    finally:
        kubectl("delete", "namespace", namespace, "--wait=true")


if __name__ == "__main__":
    anyio.run(main)
