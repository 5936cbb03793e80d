"""Bridges end to end: cluster traffic answered by local containers, without restarts.

Real parts only: Deployments in the platform cluster, carrier added to their pods as an
ephemeral container by stowaway, the tunnel to cargo, local containers in Docker. The
requests come from a client pod in the cluster, through the Service, as any caller's
would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import aiodocker
import anyio
import pytest
from kubernetes_asyncio import client

from gefyra_async.adapters.containers import exec_in
from gefyra_async.adapters.kube_objects import Bridges, Clients, exec_in_pod
from gefyra_async.api.bridges import BridgeRequest, bridge, header_rule, path_rule, unbridge
from gefyra_async.api.connection import cargo_name, down, up
from gefyra_async.api.context import Context, UserError
from gefyra_async.api.runner import RunSpec, remove, run
from gefyra_async.core import names
from tests.e2e.platform import Platform, poll, unique_name, wait_pod
from tests.e2e.test_connect import POST_ONCE, leftovers, tunnel_bytes

# Requests on ONE keep-alive connection, each with its own headers/path; prints JSON.
HTTP_LOOP = """
import http.client, json, sys
host, port, count, specs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 10
conn, out = http.client.HTTPConnection(host, port, timeout=timeout), []
for i in range(count):
    spec = specs[i % len(specs)]
    try:
        conn.request("GET", spec.get("path", "/"), headers=spec.get("headers", {}))
        answer = conn.getresponse()
        body = json.loads(answer.read())
        out.append({"spec": i % len(specs), "served_by": body["served_by"], "path": body["path"],
                    "forwarded_for": body["headers"].get("x-forwarded-for")})
    except Exception as exc:
        out.append({"spec": i % len(specs), "error": repr(exc)})
        conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
print("RESULT", json.dumps(out))  # a prefix: the exec client would parse bare JSON
"""

TCP_ONCE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"hello over tcp\\n")
print(s.makefile().readline().strip())
"""


def echo_deployment(name: str, image: str, replicas: int = 1, **pod: Any) -> Any:
    container: dict[str, Any] = {
        "name": "echo",
        "image": image,
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": 8080}, {"containerPort": 9000}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        **pod,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
            },
        },
    }


async def workload(
    kube: client.ApiClient, namespace: str, platform: Platform, name: str = "web", **pod: Any
) -> None:  # POD: extra fields of the echo container
    """Deployment NAME + Service NAME (80 → 8080, 9000) + a client pod to call them from."""
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace, echo_deployment(name, platform.demo_image, **pod)
    )
    service: Any = {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "tcp", "port": 9000, "targetPort": 9000},
            ],
        },
    }
    await core.create_namespaced_service(namespace, service)
    caller: Any = {
        "metadata": {"name": "caller"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": platform.base_image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                }
            ],
        },
    }
    await core.create_namespaced_pod(namespace, caller)
    await wait_pod(core, namespace, "caller")
    await poll(
        lambda: ready_pods(core, namespace, name, 1), within=120, what=f"deployment {name} ready"
    )


async def ready_pods(
    core: client.CoreV1Api, namespace: str, app: str, count: int
) -> list[Any] | None:
    pods = (await core.list_namespaced_pod(namespace, label_selector=f"app={app}")).items
    ready = [
        p
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return ready if len(ready) == count and len(pods) == count else None


async def http_from_caller(
    ctx: Context,
    namespace: str,
    host: str,
    specs: list[dict[str, Any]],
    count: int,
    port: int = 80,
    request_timeout: float = 10,
) -> list[dict[str, Any]]:
    out = await exec_in_pod(
        ctx.api,
        namespace,
        "caller",
        "main",
        [
            "python3",
            "-c",
            HTTP_LOOP,
            host,
            str(port),
            str(count),
            json.dumps(specs),
            str(request_timeout),
        ],
    )
    result: list[dict[str, Any]] = json.loads(out.split("RESULT", 1)[1])
    return result


async def tcp_from_caller(ctx: Context, namespace: str, host: str) -> str:
    out = await exec_in_pod(
        ctx.api, namespace, "caller", "main", ["python3", "-c", TCP_ONCE, host, "9000"]
    )
    return out.strip()


async def cli(command: list[str]) -> tuple[int, str, str]:
    """Run the CLI; (exit code, stdout, stderr)."""
    with anyio.fail_after(180):
        done = await anyio.run_process(command, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def served_by(
    ctx: Context, namespace: str, specs: list[dict[str, Any]], count: int
) -> set[str]:
    answers = await http_from_caller(ctx, namespace, "web", specs, count)
    errors = [a for a in answers if "error" in a]
    assert not errors, errors
    return {a["served_by"] for a in answers}


async def pod_state(
    core: client.CoreV1Api, namespace: str, app: str
) -> list[tuple[str, int, str, bool]]:
    """(pod, restartCount, startedAt, ready) of the echo container of every pod."""
    pods = (await core.list_namespaced_pod(namespace, label_selector=f"app={app}")).items
    found = []
    for p in pods:
        for s in p.status.container_statuses or []:
            if s.name == "echo":
                started = s.state.running.started_at.isoformat() if s.state.running else ""
                found.append((p.metadata.name, s.restart_count, started, bool(s.ready)))
    return sorted(found)


async def carriers_in(core: client.CoreV1Api, namespace: str, pod: str) -> list[tuple[str, str]]:
    """(name, running | waiting | terminated) of every carrier in POD's spec."""
    p = await core.read_namespaced_pod(pod, namespace)
    states = {s.name: s.state for s in p.status.ephemeral_container_statuses or []}
    found = []
    for c in p.spec.ephemeral_containers or []:
        state = states.get(c.name)
        kind = next(
            (k for k in ("running", "waiting", "terminated") if state and getattr(state, k)), "-"
        )
        found.append((c.name, kind))
    return found


async def docker_inspect_or_none(docker: aiodocker.Docker, name: str) -> Any:
    try:
        return await docker.containers.get(name)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise


async def local_app(ctx: Context, conn: Any, platform: Platform, name: str) -> str:
    await run(ctx, conn, RunSpec(image=platform.demo_image, name=name, env={"SERVED_BY": name}))
    return name


async def test_global_bridge_of_http_and_tcp_follows_the_local_container_and_unbridges(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    await workload(kube, namespace, platform)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    original = pod.metadata.name
    before = await pod_state(core, namespace, "web")
    conn = await up(ctx, "e2e-bridge")
    local = unique_name("local")
    try:
        await local_app(ctx, conn, platform, local)
        assert await served_by(ctx, namespace, [{}], 3) == {original}
        started = time.monotonic()
        obj = await bridge(
            ctx,
            BridgeRequest(
                "deploy/web", ["8080:8080", "9000:9000"], local, namespace, connection=conn.name
            ),
        )
        took = time.monotonic() - started
        assert obj["status"]["pods"][0]["bridged"] is True
        # Every request and every raw TCP connection through the Service: the local container.
        assert await served_by(ctx, namespace, [{}, {"path": "/x"}], 10) == {local}
        assert await tcp_from_caller(ctx, namespace, "web") == f"{local}: hello over tcp"

        # A 4 MB request through the bridge: cargo's WireGuard device received all of it.
        size = 4_000_000
        received_before = await tunnel_bytes(docker, conn.cargo)
        out = await exec_in_pod(
            ctx.api,
            namespace,
            "caller",
            "main",
            ["python3", "-c", POST_ONCE, "http://web/", str(size)],
        )
        answer = json.loads(out.split("RESULT", 1)[1])
        assert (answer["served_by"], answer["body_bytes"]) == (local, size), answer
        carried = (await tunnel_bytes(docker, conn.cargo)) - received_before
        assert carried >= size, f"the tunnel carried {carried} B of the {size} B sent"

        # The local container is re-run with a new address: the bridge follows by itself.
        old_address = obj["status"]["destination"]["address"]
        await remove(ctx, local)

        async def holder_gone() -> bool | None:  # cargo removes it, and frees the address
            return None if await docker_inspect_or_none(docker, f"{local}-netns") else True

        await poll(holder_gone, within=30, what="the removed app's holder gone")
        spacer = await local_app(ctx, conn, platform, unique_name("spacer"))  # takes the old one
        rerun = await local_app(ctx, conn, platform, local)
        assert rerun == local

        async def repointed() -> dict[str, Any] | None:
            b = await Bridges(ctx.api, ctx.settings).get(obj["metadata"]["name"])
            address = ((b or {}).get("status") or {}).get("destination", {}).get("address")
            return b if address and address != old_address else None

        try:
            await poll(repointed, within=30, what="bridge re-pointed to the new address")
        except AssertionError as exc:  # say what cargo and stowaway saw
            b = await Bridges(ctx.api, ctx.settings).get(obj["metadata"]["name"])
            cargo = await docker.containers.get(cargo_name(conn.name))
            logs = "".join(await cargo.log(stdout=True, stderr=True, tail=25))
            raise AssertionError(
                f"{exc}; bridge status {(b or {}).get('status')}; cargo: {logs}"
            ) from exc
        assert await served_by(ctx, namespace, [{}], 5) == {local}
        await remove(ctx, spacer)

        # Nothing restarted, nothing stopped being Ready.
        assert await pod_state(core, namespace, "web") == before

        assert await unbridge(ctx, obj["metadata"]["name"]) == [obj["metadata"]["name"]]
        assert await served_by(ctx, namespace, [{}], 5) == {original}
        assert await tcp_from_caller(ctx, namespace, "web") == f"{original}: hello over tcp"
        assert await pod_state(core, namespace, "web") == before

        # The carrier idles (no redirects: the app serves), and the next bridge reuses it:
        # the pod's spec, which keeps every ephemeral container it had, gains no second one.
        [(carrier, state)] = await carriers_in(core, namespace, original)
        assert state == "running"
        again = await bridge(
            ctx, BridgeRequest("deploy/web", ["8080:8080"], local, namespace, connection=conn.name)
        )
        assert await served_by(ctx, namespace, [{}], 3) == {local}
        assert await carriers_in(core, namespace, original) == [(carrier, "running")]
        # carrier came from the registry the product was pointed at, like every product image.
        final = await core.read_namespaced_pod(original, namespace)
        carriers = final.spec.ephemeral_containers
        assert [c.image.rsplit("/", 1)[0] for c in carriers] == [platform.registry]

        # --restore: the workload is rolled out, its new pod has no carrier at all.
        name = again["metadata"]["name"]
        assert await unbridge(ctx, name, restore=True) == [name]

        async def rolled_out() -> list[Any] | None:
            pods = await ready_pods(core, namespace, "web", 1)
            return pods if pods and pods[0].metadata.name != original else None

        [new] = await poll(rolled_out, within=120, what="the rolled-out pod, alone")
        assert not new.spec.ephemeral_containers
        assert await served_by(ctx, namespace, [{}], 5) == {new.metadata.name}
        report(f"bridge() → every pod bridged: {took:.2f}s")
    finally:
        await down(ctx, conn.name)
    assert await leftovers(ctx, docker) == []


async def test_header_bridges_of_two_connections_route_each_request_and_stay_isolated(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    platform_cli: list[str],
    docker: aiodocker.Docker,
) -> None:
    await workload(kube, namespace, platform)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    original = pod.metadata.name
    # Two developers, two machines: two connections, each with its own local container.
    conn_a = await up(ctx, "e2e-headers-a")
    conn_b = await up(ctx, "e2e-headers-b")
    alice, bob = unique_name("alice"), unique_name("bob")
    try:
        await local_app(ctx, conn_a, platform, alice)
        await local_app(ctx, conn_b, platform, bob)
        await bridge(
            ctx,
            BridgeRequest(
                "deploy/web/echo", ["8080:8080"], alice, namespace,
                rules=[header_rule("X-Dev=alice")], connection=conn_a.name,
            ),
        )  # fmt: skip
        # Bob's bridge through the CLI: two rules, both must match.
        code, out, err = await cli(
            [
                *platform_cli, "bridge", "deploy/web", "-n", namespace, "-p", "8080:8080",
                "--local", bob, "--connection", conn_b.name, "--header-prefix", "x-dev=bob",
                "--path-prefix", "/api", "-o", "json",
            ]
        )  # fmt: skip
        assert code == 0, err
        bob_address = json.loads(out)["status"]["destination"]["address"]
        specs: list[dict[str, Any]] = [
            {"headers": {"X-Dev": "alice"}},
            {"headers": {"X-Dev": "bob-2"}, "path": "/api/orders"},
            {"headers": {"X-Dev": "bob"}, "path": "/other"},  # path fails: AND
            {},
            {"headers": {"X-Dev": "carol"}},
            {"headers": {"x-dev": "alice"}, "path": "/api/x?q=1"},
        ]
        expected = [alice, bob, original, original, original, alice]
        answers = await http_from_caller(ctx, namespace, "web", specs, 60)
        wrong = [a for a in answers if a.get("served_by") != expected[a["spec"]]]
        assert not wrong, wrong[:5]
        # The local apps learn who asked (the caller pod); the original app's requests pass
        # unchanged.
        caller_ip = (await core.read_namespaced_pod("caller", namespace)).status.pod_ip
        assert {a["forwarded_for"] for a in answers if a["served_by"] != original} == {caller_ip}
        assert {a["forwarded_for"] for a in answers if a["served_by"] == original} == {None}

        # Alice's machine turns hostile and routes Bob's local subnet into its tunnel; Bob's
        # cargo is made to accept any tunnel address. stowaway still forwards nothing from
        # one client to another (without its rule this request is answered).
        subnet_a, subnet_b = "10.250.0.0/16", bob_address.rsplit(".", 1)[0] + ".0/24"
        assert await in_cargo(ctx, conn_b.name, "widen", subnet_a) == "widened"
        assert await in_cargo(ctx, conn_a.name, "widen", subnet_b) == "widened"
        assert await in_cargo(ctx, conn_a.name, "try", bob_address) == "blocked"
        # While Bob's own bridge keeps reaching him.
        assert await served_by(ctx, namespace, [specs[1]], 3) == {bob}

        code, out, err = await cli([*platform_cli, "bridge", "list", "-o", "json"])
        assert code == 0, err
        rows = {r["local"]: r for r in json.loads(out)}
        assert rows[alice]["ready"]
        assert rows[bob]["ready"]
        assert [r["kind"] for r in rows[bob]["rules"]] == ["header", "path"]

        # --connection limits --all to that connection's bridges.
        code, _, err = await cli([*platform_cli, "unbridge", "--all", "--connection", conn_a.name])
        assert code == 0, err
        answers = await http_from_caller(ctx, namespace, "web", specs, 12)
        expected = [original, bob, original, original, original, original]
        wrong = [a for a in answers if a.get("served_by") != expected[a["spec"]]]
        assert not wrong, wrong[:5]
        code, _, err = await cli([*platform_cli, "unbridge", "--all"])
        assert code == 0, err
        assert await served_by(ctx, namespace, specs, 12) == {original}
    finally:
        await down(ctx, conn_a.name)
        await down(ctx, conn_b.name)
    assert await leftovers(ctx, docker) == []


# Run in cargo. `widen SUBNET`: accept SUBNET from the tunnel's one peer (stowaway) and route
# it into the tunnel. `try ADDRESS`: an HTTP request to ADDRESS:8080 → "reached"/"blocked".
HOSTILE_CARGO = r"""
import socket, subprocess, sys

def uapi(text):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/var/run/wireguard/wg0.sock")
    s.sendall(text.encode())
    out = b""
    while not out.endswith(b"\n\n"):
        out += s.recv(65536)
    s.close()
    return out.decode()

if sys.argv[1] == "widen":  # accept and route SUBNET through the tunnel's one peer
    subnet = sys.argv[2]
    peer = [l[11:] for l in uapi("get=1\n\n").splitlines() if l.startswith("public_key=")][0]
    assert "errno=0" in uapi(f"set=1\npublic_key={peer}\nallowed_ip={subnet}\n\n")
    subprocess.run(["ip", "route", "replace", subnet, "dev", "wg0"], check=True)
    print("RESULT widened")
else:  # try ADDRESS:8080 over HTTP
    try:
        s = socket.create_connection((sys.argv[2], 8080), timeout=4)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        print("RESULT", "reached" if s.recv(100) else "closed")
    except OSError as exc:
        print("RESULT", "blocked", exc)
"""


async def in_cargo(ctx: Context, connection: str, *args: str) -> str:
    code, out = await exec_in(
        ctx.docker, cargo_name(connection), ["python3", "-c", HOSTILE_CARGO, *args]
    )
    assert code == 0, out
    assert "RESULT" in out, out
    return out.split("RESULT", 1)[1].split()[0]


PROBED: dict[str, Any] = {
    # A custom command, and one probe of each kind: the original container must keep
    # passing all of them while carrier sits in front of its port.
    "command": ["sh", "-c", "touch /tmp/started && exec python3 -u /usr/local/bin/echo_server.py"],
    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    "livenessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1, "failureThreshold": 2},
    "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1},
}


async def test_probes_custom_command_and_restart_count_survive_bridging(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
) -> None:
    await workload(kube, namespace, platform, **PROBED)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    before = await pod_state(core, namespace, "web")
    conn = await up(ctx, "e2e-probes")
    local = unique_name("local")
    samples: list[list[tuple[str, int, str, bool]]] = []
    try:
        await local_app(ctx, conn, platform, local)
        obj = await bridge(
            ctx,
            BridgeRequest("deploy/web", ["8080", "9000"], local, namespace, connection=conn.name),
        )
        for _ in range(8):  # ~8 probe periods while bridged
            samples.append(await pod_state(core, namespace, "web"))
            assert await served_by(ctx, namespace, [{}], 2) == {local}
            await anyio.sleep(0.5)
        await unbridge(ctx, obj["metadata"]["name"])
        for _ in range(4):
            samples.append(await pod_state(core, namespace, "web"))
            await anyio.sleep(0.5)
        assert await served_by(ctx, namespace, [{}], 2) == {pod.metadata.name}
    finally:
        await down(ctx, conn.name)
    # Same container start, no restart, Ready in every sample.
    assert all(s == before for s in samples), (before, samples)
    assert before[0][3] is True


async def test_rollout_and_scale_up_bridge_every_new_pod(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    await workload(kube, namespace, platform)
    apps = client.AppsV1Api(kube)
    conn = await up(ctx, "e2e-churn")
    local = unique_name("local")
    delays: list[float] = []
    try:
        await local_app(ctx, conn, platform, local)
        obj = await bridge(
            ctx,
            BridgeRequest(
                "deploy/web", ["8080:8080"], local, namespace,
                rules=[header_rule("X-Dev=me")], connection=conn.name,
            ),
        )  # fmt: skip
        name = obj["metadata"]["name"]

        async def all_bridged(count: int) -> list[dict[str, Any]] | None:
            pods = await ready_pods(core, namespace, "web", count)
            b = await Bridges(ctx.api, ctx.settings).get(name)
            listed = ((b or {}).get("status") or {}).get("pods") or []
            if pods is None or len(listed) != count:
                return None
            if {p.metadata.name for p in pods} != {e["pod"].split("/")[1] for e in listed}:
                return None
            return listed if all(e["bridged"] for e in listed) else None

        async def check_each_pod(count: int) -> None:
            for p in await ready_pods(core, namespace, "web", count) or []:
                answers = await http_from_caller(
                    ctx, namespace, p.status.pod_ip, [{"headers": {"X-Dev": "me"}}, {}], 4, 8080
                )
                assert [a.get("served_by") for a in answers] == [local, p.metadata.name] * 2

        await apps.patch_namespaced_deployment_scale(
            name="web", namespace=namespace, body={"spec": {"replicas": 3}}
        )
        listed = await poll(lambda: all_bridged(3), within=90, what="3 pods bridged")
        delays += [e["readyToBridgedSeconds"] for e in listed if "readyToBridgedSeconds" in e]
        await check_each_pod(3)

        old = {e["pod"] for e in listed}
        restart: Any = {
            "spec": {"template": {"metadata": {"annotations": {"e2e/restarted": str(time.time())}}}}
        }
        await apps.patch_namespaced_deployment("web", namespace, restart)

        async def rolled() -> list[dict[str, Any]] | None:
            found = await all_bridged(3)
            return found if found and not ({e["pod"] for e in found} & old) else None

        listed = await poll(rolled, within=180, what="rolled out pods bridged")
        delays += [e["readyToBridgedSeconds"] for e in listed if "readyToBridgedSeconds" in e]
        await check_each_pod(3)
        # Pods came and went (their carriers with them); no actor of stowaway failed.
        [stowaway] = (
            await core.list_namespaced_pod(
                ctx.settings.namespace, label_selector=f"{names.COMPONENT}={names.STOWAWAY}"
            )
        ).items
        logs = await core.read_namespaced_pod_log(stowaway.metadata.name, ctx.settings.namespace)
        assert "actor failed" not in logs, [ln for ln in logs.splitlines() if "actor failed" in ln]
    finally:
        await down(ctx, conn.name)
    assert len(delays) >= 5, delays  # 2 from the scale-up, 3 from the rollout
    report(
        f"pod Ready → bridged over {len(delays)} new pods: "
        f"min {min(delays):.2f}s, median {sorted(delays)[len(delays) // 2]:.2f}s, "
        f"max {max(delays):.2f}s ({', '.join(f'{d:.2f}' for d in delays)})"
    )
    assert await leftovers(ctx, docker) == []


async def test_a_vanished_laptop_suspends_its_bridge_and_a_returning_one_resumes_it(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    await workload(kube, namespace, platform)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    original = pod.metadata.name
    before = await pod_state(core, namespace, "web")
    conn = await up(ctx, "e2e-vanish")
    local = unique_name("local")
    cargo = await docker.containers.get(cargo_name(conn.name))
    try:
        await local_app(ctx, conn, platform, local)
        obj = await bridge(
            ctx, BridgeRequest("deploy/web", ["8080:8080"], local, namespace, connection=conn.name)
        )
        assert await served_by(ctx, namespace, [{}], 3) == {local}

        async def ready_reason(want: str) -> bool | None:
            b = await Bridges(ctx.api, ctx.settings).get(obj["metadata"]["name"])
            conditions = ((b or {}).get("status") or {}).get("conditions") or []
            return True if any(c["reason"] == want for c in conditions) else None

        async def carriers() -> list[str]:
            p = await core.read_namespaced_pod(original, namespace)
            return [c.name for c in p.spec.ephemeral_containers or []]

        added = await carriers()
        # The laptop vanishes without a word: cargo frozen, no packet, no FIN.
        await cargo.pause()
        gone = time.monotonic()
        await poll(lambda: ready_reason("ClientGone"), within=90, what="bridge suspended")
        suspended = time.monotonic() - gone
        assert await served_by(ctx, namespace, [{}], 5) == {original}

        # It comes back: the bridge resumes by itself.
        await cargo.unpause()
        back = time.monotonic()
        await poll(lambda: ready_reason("Bridged"), within=90, what="bridge resumed")
        resumed = time.monotonic() - back
        assert await served_by(ctx, namespace, [{}], 5) == {local}
        assert await pod_state(core, namespace, "web") == before
        assert await carriers() == added  # the same carrier, idle meanwhile
        report(f"laptop gone → bridge suspended: {suspended:.1f}s; back → resumed: {resumed:.1f}s")
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await cargo.unpause()
        await down(ctx, conn.name)
    assert await leftovers(ctx, docker) == []


async def test_a_laptop_gone_for_good_is_removed_from_the_cluster_and_can_come_back(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    # The watchdog's limit is a day by default; this cluster side is installed with 30 s.
    quick = dataclasses.replace(
        ctx, settings=dataclasses.replace(ctx.settings, client_reap_after=30.0)
    )
    await workload(kube, namespace, platform)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    original = pod.metadata.name
    before = await pod_state(core, namespace, "web")
    conn = await up(quick, "e2e-reap")
    local = unique_name("local")
    cargo = await docker.containers.get(cargo_name(conn.name))
    try:
        await local_app(quick, conn, platform, local)
        obj = await bridge(
            quick,
            BridgeRequest("deploy/web", ["8080:8080"], local, namespace, connection=conn.name),
        )
        assert await served_by(quick, namespace, [{}], 3) == {local}

        await cargo.pause()  # gone without `down`, and it stays away
        gone = time.monotonic()

        async def removed() -> bool | None:
            client_obj = await Clients(quick.api, quick.settings).get(conn.name)
            bridge_obj = await Bridges(quick.api, quick.settings).get(obj["metadata"]["name"])
            return True if client_obj is None and bridge_obj is None else None

        await poll(removed, within=120, what="client and bridge removed by the watchdog")
        took = time.monotonic() - gone

        # Its carrier idles, without redirects: the original app serves.
        assert await served_by(quick, namespace, [{}], 5) == {original}
        [(carrier, state)] = await carriers_in(core, namespace, original)
        assert state == "running"
        events = await core.list_namespaced_event(
            quick.settings.namespace, field_selector="reason=ClientReaped"
        )
        assert [e.involved_object.name for e in events.items] == [conn.name]

        # The laptop is back: `up` connects it anew, and a new bridge works.
        await cargo.unpause()
        conn = await up(quick, "e2e-reap")
        await bridge(
            quick,
            BridgeRequest("deploy/web", ["8080:8080"], local, namespace, connection=conn.name),
        )
        assert await served_by(quick, namespace, [{}], 3) == {local}
        assert await pod_state(core, namespace, "web") == before
        assert await carriers_in(core, namespace, original) == [(carrier, "running")]  # reused
        report(f"laptop gone → client and bridge removed, carrier idle: {took:.1f}s (limit 30 s)")
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await cargo.unpause()
        await down(quick, conn.name)
    assert await leftovers(ctx, docker) == []


TCP_CONNECT = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
print("connected")
"""


async def test_a_restarted_stowaway_takes_up_tunnel_and_bridges_again(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
    report: Callable[[str], None],
) -> None:
    """The cluster side's only pod is deleted: its replacement (a new pod IP) takes up the
    laptop's tunnel and the bridge, the carrier reconnects; the workload is not touched."""
    await workload(kube, namespace, platform)
    [pod] = await ready_pods(core, namespace, "web", 1) or []
    original = pod.metadata.name
    before = await pod_state(core, namespace, "web")
    conn = await up(ctx, "e2e-restart")
    local = unique_name("local")
    try:
        await local_app(ctx, conn, platform, local)
        await bridge(
            ctx, BridgeRequest("deploy/web", ["8080:8080"], local, namespace, connection=conn.name)
        )
        assert await served_by(ctx, namespace, [{}], 3) == {local}
        p = await core.read_namespaced_pod(original, namespace)
        carriers = [c.name for c in p.spec.ephemeral_containers or []]

        selector = f"{names.COMPONENT}={names.STOWAWAY}"
        [old] = (
            await core.list_namespaced_pod(ctx.settings.namespace, label_selector=selector)
        ).items
        await core.delete_namespaced_pod(old.metadata.name, ctx.settings.namespace)
        deleted = time.monotonic()

        async def old_pod_gone() -> bool | None:
            try:
                await core.read_namespaced_pod(old.metadata.name, ctx.settings.namespace)
            except client.ApiException as exc:
                return True if exc.status == 404 else None
            return None

        # Until then the old pod may still serve; only what follows proves the new one.
        await poll(old_pod_gone, within=120, what="the old stowaway pod gone")
        gone = time.monotonic()

        async def answered_locally() -> bool | None:
            # Short timeouts: a request stuck in a broken path must not hide the moment
            # the path works again.
            answers = await http_from_caller(ctx, namespace, "web", [{}], 1, request_timeout=0.5)
            ok = all(a.get("served_by") == local for a in answers)
            return True if ok else None

        await poll(
            answered_locally, within=180, what="bridged requests answered locally again",
            interval=0.1,
        )  # fmt: skip
        bridged_again = time.monotonic() - gone
        assert await served_by(ctx, namespace, [{}], 10) == {local}

        async def tunnel_carries() -> str | None:
            code, out = await exec_in(
                docker,
                local,
                ["python3", "-c", TCP_CONNECT, "kubernetes.default.svc.cluster.local", "443"],
            )
            return out if code == 0 and "connected" in out else None

        await poll(tunnel_carries, within=60, what="local container reaches the cluster again")
        pods = await core.list_namespaced_pod(ctx.settings.namespace, label_selector=selector)
        [new] = [p for p in pods.items if not p.metadata.deletion_timestamp]
        assert new.metadata.name != old.metadata.name
        p = await core.read_namespaced_pod(original, namespace)
        assert [c.name for c in p.spec.ephemeral_containers or []] == carriers  # reconnected
        assert await pod_state(core, namespace, "web") == before
        report(
            f"stowaway pod deleted → old pod gone {gone - deleted:.1f}s → bridged requests "
            f"answered locally again {bridged_again:.1f}s later"
        )
    finally:
        await down(ctx, conn.name)
    assert await leftovers(ctx, docker) == []


async def test_bad_targets_are_clear_errors_and_leave_nothing(
    ctx: Context,
    kube: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    platform_cli: list[str],
    docker: aiodocker.Docker,
) -> None:
    await workload(kube, namespace, platform)
    conn = await up(ctx, "e2e-badbridge")
    local = unique_name("local")
    try:
        await local_app(ctx, conn, platform, local)
        cases = [
            (BridgeRequest("deploy/missing", ["8080"], local, namespace), "does not exist"),
            (BridgeRequest("deploy/web", ["1234"], local, namespace), "declares port"),
            (BridgeRequest("deploy/web/nope", ["8080"], local, namespace), "has no container"),
            (BridgeRequest("deploy/web", ["8080"], local, "no-such-ns"), "namespace"),
            (BridgeRequest("deploy/web", ["8080"], "no-such-local", namespace), "is not running"),
            (BridgeRequest("svc/web", ["8080"], local, namespace), "not one of"),
            (BridgeRequest("deploy/web", ["8080:x"], local, namespace), "remote:local"),
        ]
        for request, text in cases:
            request.connection = conn.name
            with pytest.raises(UserError, match=text):
                await bridge(ctx, request)
        with pytest.raises(UserError, match="not up"):
            await bridge(
                ctx, BridgeRequest("deploy/web", ["8080"], local, namespace, connection="nope")
            )
        with pytest.raises(UserError, match="rule"):
            header_rule("X-Dev=(", "regex")
        with pytest.raises(UserError, match="NAME=VALUE"):
            header_rule("novalue")
        assert path_rule("/api", "prefix")["match"] == "prefix"
        # The CLI says it in one line and exits 1.
        code, _, err = await cli(
            [*platform_cli, "bridge", "deploy/missing", "-n", namespace, "-p", "8080",
             "--local", local, "--connection", conn.name]
        )  # fmt: skip
        assert code == 1
        assert err.startswith("error: ")
        assert err.count("\n") == 1, err
        # Nothing was made: no Bridge, no carrier in the pod.
        assert await Bridges(ctx.api, ctx.settings).list() == []
        [pod] = await ready_pods(core, namespace, "web", 1) or []
        assert not pod.spec.ephemeral_containers
    finally:
        await down(ctx, conn.name)
    assert await leftovers(ctx, docker) == []
