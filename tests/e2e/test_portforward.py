"""The port-forward adapter against the platform's real API server, kubelet and containerd.

Everything goes through the API server only: the servers in the pod listen on the pod's
127.0.0.1, which nothing but a port-forward (the runtime dials ``localhost`` inside the
pod's network namespace) can reach.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import client

from gefyra_async.adapters.datagram_relay import RelayStats, udp_to_stream
from gefyra_async.adapters.portforward import PortForwardError, open_port_forward
from tests.e2e.platform import Platform, poll, run_pod, wait_pod

ECHO_PORT, GREETING_PORT, RELAY_PORT, CLOSED_PORT = 7000, 7001, 7002, 7999

# Three servers on the pod's loopback, standard library only (the base image has no pip):
# - ECHO_PORT echoes, and logs how many bytes each connection carried once it closed;
# - GREETING_PORT sends one line and closes;
# - RELAY_PORT is a one-file counterpart of datagram_relay.serve_stream_relay: frames
#   (2-byte big-endian length + datagram) to and from a UDP echo on 127.0.0.1:51820,
#   which stands in for WireGuard.
SERVERS = r"""
import socket, struct, threading

def serve(port, handler):
    server = socket.create_server(("127.0.0.1", port))
    def accept():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()

def echo(conn):
    total = 0
    with conn:
        while data := conn.recv(262144):
            conn.sendall(data)
            total += len(data)
    print(f"echo connection closed after {total} bytes", flush=True)

def greeting(conn):
    with conn:
        conn.sendall(f"hello from {socket.gethostname()}\n".encode())

def wireguard_stand_in():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 51820))
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)

def framed_relay(conn):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", 51820))
    def back():
        try:
            while True:
                data = udp.recv(65535)
                conn.sendall(struct.pack("!H", len(data)) + data)
        except OSError:
            pass
    threading.Thread(target=back, daemon=True).start()
    stream = conn.makefile("rb")
    while len(head := stream.read(2)) == 2:
        udp.send(stream.read(struct.unpack("!H", head)[0]))
    udp.close()
    conn.close()

threading.Thread(target=wireguard_stand_in, daemon=True).start()
serve(7000, echo)
serve(7001, greeting)
serve(7002, framed_relay)
print("serving", flush=True)
threading.Event().wait()
"""


@pytest.fixture(scope="session")
def clean_product_state() -> None:
    """Overrides conftest's: these tests install no gefyra-async, so they take none down.

    Other connections on the shared platform (a demo, another run) are left alone.
    """


def servers_pod(name: str, image: str) -> Any:
    # Probing the greeting port keeps the echo server's log to the test's connections.
    probe = "import socket; socket.create_connection(('127.0.0.1', 7001), 1)"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "servers",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-u", "-c", SERVERS],
                    "readinessProbe": {
                        "exec": {"command": ["python3", "-c", probe]},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


@pytest.fixture
async def pod(core: client.CoreV1Api, namespace: str, platform: Platform) -> str:
    await core.create_namespaced_pod(namespace, servers_pod("servers", platform.base_image))
    await wait_pod(core, namespace, "servers")
    return "servers"


async def test_one_mebibyte_comes_back_intact_and_closing_closes_the_pods_connection(
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    pod: str,
    report: Callable[[str], None],
) -> None:
    payload = random.Random(1).randbytes(1 << 20)
    received = bytearray()
    with anyio.fail_after(60):
        async with open_port_forward(
            kube.configuration, namespace=namespace, pod=pod, port=ECHO_PORT
        ) as stream:
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:

                async def send_all() -> None:
                    for start in range(0, len(payload), 16384):  # 64 chunks of 16 KiB
                        await stream.send(payload[start : start + 16384])

                tg.start_soon(send_all)
                while len(received) < len(payload):
                    received += await stream.receive()
            elapsed = time.perf_counter() - started
    assert bytes(received) == payload
    report(f"1 MiB echoed through the port-forward in {elapsed * 1000:.0f} ms")

    # Leaving the context closed the WebSocket; the runtime closed the pod's connection.
    async def echo_log() -> str | None:
        log: str = await core.read_namespaced_pod_log(pod, namespace)
        return log if "echo connection closed" in log else None

    log = await poll(echo_log, within=30, what="the echo server saw its connection close")
    assert log.splitlines()[1:] == [f"echo connection closed after {1 << 20} bytes"]


async def test_end_of_the_pods_connection_ends_the_stream(
    kube: client.ApiClient, namespace: str, pod: str
) -> None:
    with anyio.fail_after(30):
        async with open_port_forward(
            kube.configuration, namespace=namespace, pod=pod, port=GREETING_PORT
        ) as stream:
            received = bytearray()
            try:
                while True:
                    received += await stream.receive()
            except anyio.EndOfStream:
                pass
            with pytest.raises(anyio.EndOfStream):  # and it stays ended
                await stream.receive()
    assert bytes(received) == f"hello from {pod}\n".encode()


async def test_port_nobody_listens_on_raises_a_clear_error(
    kube: client.ApiClient, namespace: str, pod: str
) -> None:
    with anyio.fail_after(30):
        async with open_port_forward(
            kube.configuration, namespace=namespace, pod=pod, port=CLOSED_PORT
        ) as stream:
            with pytest.raises(PortForwardError) as caught:
                await stream.receive()
            # Sending afterwards fails the same way, never silently.
            with pytest.raises(PortForwardError) as again:
                await stream.send(b"anyone?")
    message = str(caught.value)
    print(f"\n{message}\n  detail: {caught.value.detail}")
    assert message == (
        f"nothing listens on port {CLOSED_PORT} in the pod {namespace}/{pod} "
        "(connection refused); check the port and that the app in the pod is up"
    )
    assert "connection refused" in caught.value.detail
    assert again.value is caught.value


async def test_missing_pod_raises_a_clear_error(kube: client.ApiClient, namespace: str) -> None:
    with anyio.fail_after(30), pytest.raises(PortForwardError) as caught:
        async with open_port_forward(
            kube.configuration, namespace=namespace, pod="no-such-pod", port=ECHO_PORT
        ):
            pass
    print(f"\n{caught.value}")
    assert str(caught.value) == (
        f"the pod {namespace}/no-such-pod does not exist; check its name and namespace"
    )


async def test_credentials_are_checked_and_refreshed_tokens_used(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, pod: str
) -> None:
    # A service account with no RBAC at all: authenticated, but not allowed to port-forward.
    account: Any = {"metadata": {"name": "nobody"}}
    await core.create_namespaced_service_account(namespace, account)
    request: Any = {"spec": {"expirationSeconds": 600}}
    token = (
        await core.create_namespaced_service_account_token("nobody", namespace, request)
    ).status.token

    configuration = copy.deepcopy(kube.configuration)
    configuration.cert_file = configuration.key_file = None  # the token alone speaks
    configuration.api_key = {"BearerToken": "Bearer not-a-token"}
    with anyio.fail_after(30), pytest.raises(PortForwardError) as unauthorized:
        async with open_port_forward(configuration, namespace=namespace, pod=pod, port=ECHO_PORT):
            pass
    assert "did not accept the kubeconfig's credentials (401)" in str(unauthorized.value)

    # A refresh hook (as exec plugins and OIDC install) is asked before the request.
    def refresh(config: Any) -> None:
        config.api_key["BearerToken"] = f"Bearer {token}"

    configuration.refresh_api_key_hook = refresh
    with anyio.fail_after(30), pytest.raises(PortForwardError) as forbidden:
        async with open_port_forward(configuration, namespace=namespace, pod=pod, port=ECHO_PORT):
            pass
    print(f"\n{unauthorized.value}\n{forbidden.value}")
    assert str(forbidden.value) == (
        f"the kubeconfig's user may not port-forward to {namespace}/{pod}:{ECHO_PORT} (403); "
        "it needs the RBAC permission to create pods/portforward in that namespace"
    )


async def test_datagrams_through_the_port_forward_come_back_intact_and_in_order(
    kube: client.ApiClient, namespace: str, pod: str, report: Callable[[str], None]
) -> None:
    rng = random.Random(5)
    stats = RelayStats()
    with anyio.fail_after(60):
        async with (
            open_port_forward(
                kube.configuration, namespace=namespace, pod=pod, port=RELAY_PORT
            ) as stream,
            anyio.create_task_group() as tg,
        ):
            local_port = await tg.start(partial(udp_to_stream, stream=stream, stats=stats))
            async with await anyio.create_connected_udp_socket("127.0.0.1", local_port) as wg:
                # A burst, as WireGuard sends one: all out before the first answer is read.
                burst = [rng.randbytes(rng.randrange(32, 1421)) for _ in range(64)]
                started = time.perf_counter()
                for datagram in burst:
                    await wg.send(datagram)
                answers = [await wg.receive() for _ in burst]
                elapsed = time.perf_counter() - started
                assert answers == burst
                for size in (1, 1420, 9000, 65507):
                    datagram = os.urandom(size)
                    await wg.send(datagram)
                    assert await wg.receive() == datagram
            tg.cancel_scope.cancel()
    assert (stats.to_stream, stats.from_stream, stats.dropped_no_peer) == (68, 68, 0)
    report(
        f"a burst of 64 datagrams there and back through the port-forward: {elapsed * 1000:.0f} ms"
    )


async def test_pod_that_does_not_run_raises_a_clear_error(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str, platform: Platform
) -> None:
    # A pod whose image is nowhere stays Pending, although its sandbox (and so a network
    # namespace to dial in) exists; and a pod that ran to its end.
    pending = servers_pod("pending", f"{platform.image_prefix}/does-not-exist:1")
    await core.create_namespaced_pod(namespace, pending)
    phase, _ = await run_pod(core, namespace, platform.base_image, ["true"], name="finished")
    assert phase == "Succeeded"
    for name, expected in (("pending", "Pending"), ("finished", "Succeeded")):
        with anyio.fail_after(30), pytest.raises(PortForwardError) as caught:
            async with open_port_forward(
                kube.configuration, namespace=namespace, pod=name, port=ECHO_PORT
            ) as stream:
                await stream.receive()
        print(f"\n{caught.value}\n  detail: {caught.value.detail}")
        assert str(caught.value) == (
            f"the pod {namespace}/{name} is not running (phase {expected}); "
            "wait until it runs, or start it again"
        )
