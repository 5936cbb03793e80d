"""Connect end to end: up, run, DNS, restart, two connections, down, bad inputs.

Everything here is real: stowaway in the platform cluster, cargo and the apps in the
platform's Docker engine, WireGuard (wireguard-go) between them over the tunnel
Service's NodePort, and cluster DNS through cargo's forwarder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
import anyio
import pytest
from kubernetes_asyncio import client

from gefyra_async.adapters.kube_objects import objects_with_label
from gefyra_async.api.connection import down, up
from gefyra_async.api.context import Context
from gefyra_async.api.runner import RunSpec, run
from gefyra_async.core import names
from tests.e2e.platform import Platform, demo_pod, poll, unique_name, wait_pod

MANAGED = f"{names.MANAGED_BY}={names.MANAGED_BY_VALUE}"

# A client loop: fetch URLs forever, one JSON line per answer or error.
LOOP = """
import json, sys, time, urllib.request as u
while True:
    for url in sys.argv[1:]:
        try:
            body = json.loads(u.urlopen(url, timeout=5).read())
            print(json.dumps({"url": url, "served_by": body["served_by"]}), flush=True)
        except Exception as e:
            print(json.dumps({"url": url, "error": repr(e)}), flush=True)
    time.sleep(0.3)
"""


async def demo_service(core: client.CoreV1Api, namespace: str, platform: Platform) -> Any:
    await core.create_namespaced_pod(namespace, demo_pod("demo", platform.demo_image))
    body: Any = {
        "metadata": {"name": "demo"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    await core.create_namespaced_service(namespace, body)
    return await wait_pod(core, namespace, "demo")


async def lines(docker: aiodocker.Docker, name: str) -> list[dict[str, Any]]:
    container = await docker.containers.get(name)
    out = await container.log(stdout=True, stderr=True)
    return [json.loads(x) for x in "".join(out).splitlines() if x.startswith("{")]


async def tunnel_bytes(docker: aiodocker.Docker, cargo: str, key: str = "rxBytes") -> int:
    """Bytes cargo's WireGuard device has received from (KEY txBytes: sent to) stowaway."""
    container = await docker.containers.get(cargo)
    stats = await container.exec(["python3", "-m", "gefyra_async.cargo", "stats"])
    async with stats.start(detach=False) as stream:
        message = await stream.read_out()
    assert message is not None
    return sum(int(peer[key]) for peer in json.loads(message.data))


# POST SIZE bytes to URL; prints RESULT and the JSON answer (the demo server counts the
# body). The prefix: the Kubernetes exec client would parse bare JSON.
POST_ONCE = """
import sys, urllib.request as u
body = b"x" * int(sys.argv[2])
answer = u.urlopen(u.Request(sys.argv[1], data=body, method="POST"), timeout=60)
print("RESULT", answer.read().decode())
"""


async def post_through_tunnel(
    docker: aiodocker.Docker, app: str, cargo: str, url: str, size: int
) -> None:
    """POST SIZE bytes from local container APP to URL; the server got them all, and cargo's
    WireGuard device sent at least as many (the tunnel carried them, nothing else did)."""
    sent_before = await tunnel_bytes(docker, cargo, "txBytes")
    out = await exec_output(docker, app, ["python3", "-c", POST_ONCE, url, str(size)])
    answer = json.loads(out.split("RESULT", 1)[1])
    assert answer["body_bytes"] == size, answer
    carried = (await tunnel_bytes(docker, cargo, "txBytes")) - sent_before
    assert carried >= size, f"the tunnel carried {carried} B of the {size} B sent"


async def exec_output(docker: aiodocker.Docker, name: str, command: list[str]) -> str:
    container = await docker.containers.get(name)
    run = await container.exec(command)
    out = []
    async with run.start(detach=False) as stream:
        while (message := await stream.read_out()) is not None:
            out.append(message.data.decode())
    return "".join(out)


async def leftovers(ctx: Context, docker: aiodocker.Docker) -> list[str]:
    found = await objects_with_label(ctx.api, MANAGED)
    filters = json.dumps({"label": [MANAGED]})
    found += [
        f"container/{c.id[:12]}" for c in await docker.containers.list(all=True, filters=filters)
    ]
    found += [
        f"network/{n['Name']}" for n in await docker.networks.list(filters={"label": [MANAGED]})
    ]
    return found


async def test_run_reaches_cluster_services_by_dns_and_survives_restart(
    ctx: Context,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
) -> None:
    pod = await demo_service(core, namespace, platform)
    conn = await up(ctx, "e2e-main")
    app = unique_name("app")
    try:
        urls = [
            f"http://demo.{namespace}.svc.cluster.local/",
            "http://demo/",  # the search list
            f"http://{pod.status.pod_ip}:8080/",  # a pod IP directly
        ]
        await run(
            ctx,
            conn,
            RunSpec(
                image=platform.base_image,
                name=app,
                namespace=namespace,
                command=["python3", "-c", LOOP, *urls],
            ),
        )

        async def answered(since: int = 0) -> list[dict[str, Any]] | None:
            got = (await lines(docker, app))[since:]
            ok = {x["url"] for x in got if x.get("served_by") == pod.metadata.name}
            return got if ok >= set(urls) else None

        before_tunnel = await tunnel_bytes(docker, conn.cargo)
        first = await poll(answered, within=30, what="the app got answers for every URL")
        # The very first request already went through the tunnel: no error before it.
        assert "error" not in first[0], first[:3]
        # And it was the tunnel that carried them (the platform blocks every other path
        # from connection networks to the cluster; see docs/platform.md).
        received = (await tunnel_bytes(docker, conn.cargo)) - before_tunnel
        assert received > 3 * 200, received

        # 10 MB to a Service by its DNS name: cargo's WireGuard device carried all of it,
        # so nothing reached the cluster beside the tunnel.
        await post_through_tunnel(docker, app, conn.cargo, "http://demo/", 10_000_000)

        # The resolver is cargo's forwarder, over UDP: ask it directly from the app.
        container = await docker.containers.get(app)
        check = await container.exec(
            ["python3", "-c", DNS_QUERY, conn.cargo_ip, f"demo.{namespace}.svc.cluster.local"]
        )
        async with check.start(detach=False) as stream:
            message = await stream.read_out()
        assert message is not None
        answer = message.data.decode().strip()
        service = await core.read_namespaced_service("demo", namespace)
        assert answer == service.spec.cluster_ip

        # docker restart keeps the connectivity.
        before = len(await lines(docker, app))
        await container.restart(timeout=1)
        await poll(lambda: answered(before), within=30, what="answers after docker restart")
    finally:
        await down(ctx, "e2e-main")
    assert await leftovers(ctx, docker) == []


DNS_QUERY = """
import random, socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
qid = random.randrange(65536)
q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
q += labels + b"\\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (server, 53))
data = s.recv(4096)
assert struct.unpack("!H", data[:2])[0] == qid
print(socket.inet_ntoa(data[-4:]))
"""


async def test_two_connections_one_leaves_the_other_keeps_carrying_traffic(
    ctx: Context,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
) -> None:
    pod = await demo_service(core, namespace, platform)
    url = f"http://demo.{namespace}.svc.cluster.local/"
    apps = {"e2e-a": unique_name("app-a"), "e2e-b": unique_name("app-b")}
    try:
        for connection, app in apps.items():
            conn = await up(ctx, connection)
            await run(
                ctx,
                conn,
                RunSpec(image=platform.base_image, name=app, command=["python3", "-c", LOOP, url]),
            )

        async def both_answer() -> bool | None:
            for app in apps.values():
                if not any(
                    x.get("served_by") == pod.metadata.name for x in await lines(docker, app)
                ):
                    return None
            return True

        await poll(both_answer, within=30, what="both connections answer")
        mark = len(await lines(docker, apps["e2e-a"]))
        removed = await down(ctx, "e2e-b")
        assert "client/e2e-b" in removed
        assert not any(r.startswith("cluster-side") for r in removed)  # e2e-a still uses it
        seen = len(await lines(docker, apps["e2e-a"]))

        async def kept_going() -> list[dict[str, Any]] | None:
            got = (await lines(docker, apps["e2e-a"]))[mark:]
            return got if len(got) >= (seen - mark) + 5 else None

        during_and_after = await poll(kept_going, within=30, what="e2e-a keeps answering")
        assert [x for x in during_and_after if "error" in x] == []
        assert {x["served_by"] for x in during_and_after} == {pod.metadata.name}
        assert await docker.networks.list(filters={"name": ["gefyra-async-e2e-b"]}) == []
    finally:
        await down(ctx, "e2e-b")
        await down(ctx, "e2e-a")
    assert await leftovers(ctx, docker) == []


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gefyra_async.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        check=False,
    )


def assert_one_clear_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


async def test_bad_kubeconfig_cluster_or_docker_are_clear_errors(
    platform: Platform, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("apiVersion: v1\nclusters: [unclosed\n")
    assert_one_clear_error(cli("--kubeconfig", str(garbage), "status"), "is not valid YAML")

    missing = tmp_path / "missing.yaml"
    assert_one_clear_error(cli("--kubeconfig", str(missing), "status"), "does not exist")

    assert_one_clear_error(
        cli("--kubeconfig", str(platform.kubeconfig), "--context", "nope", "status"),
        "the context 'nope' is not in",
    )

    # A closed port on loopback: the cluster is unreachable.
    unreachable = tmp_path / "unreachable.yaml"
    text = platform.kubeconfig.read_text()
    server = next(
        line.split("server:")[1].strip() for line in text.splitlines() if "server:" in line
    )
    unreachable.write_text(text.replace(server, "https://127.0.0.1:1"))
    assert_one_clear_error(cli("--kubeconfig", str(unreachable), "status"), "is not reachable")

    assert_one_clear_error(
        cli(
            "--kubeconfig",
            str(platform.kubeconfig),
            "status",
            env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"},
        ),
        "Docker is not reachable",
    )


async def test_run_bad_inputs_leave_nothing_and_env_from_copies_the_workload_env(
    ctx: Context,
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    docker: aiodocker.Docker,
) -> None:
    body = demo_pod("demo", platform.demo_image)
    body["spec"]["containers"][0]["env"] = [{"name": "DEMO_GREETING", "value": "hello from pod"}]
    await core.create_namespaced_pod(namespace, body)
    await wait_pod(core, namespace, "demo")
    kube = ["--kubeconfig", str(platform.kubeconfig)]
    await up(ctx, "default")
    try:
        name = unique_name("bad")

        async def nothing_named(n: str) -> None:
            for ref in (n, f"{n}-netns"):
                with pytest.raises(aiodocker.DockerError):
                    await docker.containers.get(ref)

        base = ["run", "--name", name, "-n", namespace, "--command", "true"]
        assert_one_clear_error(
            cli(*kube, *base, "--image", f"{platform.registry}/does-not-exist:1"),
            f"the image {platform.registry}/does-not-exist:1 is not in the registry",
        )
        await nothing_named(name)
        assert_one_clear_error(
            cli(*kube, *base, "--image", platform.base_image, "--env-from", "deployment/nope"),
            "deployment 'nope' does not exist",
        )
        await nothing_named(name)
        assert_one_clear_error(
            cli(
                *kube,
                "run",
                "--name",
                name,
                "-n",
                "no-such-namespace",
                "--image",
                platform.base_image,
                "--env-from",
                "pod/demo",
            ),
            "namespace 'no-such-namespace' does not exist",
        )
        await nothing_named(name)

        taken = await docker.containers.run(
            {"Image": platform.base_image, "Cmd": ["sleep", "60"]}, name=name
        )
        try:
            assert_one_clear_error(
                cli(*kube, *base, "--image", platform.base_image), "already exists"
            )
            with pytest.raises(aiodocker.DockerError):
                await docker.containers.get(f"{name}-netns")
            assert (await taken.show())["State"]["Running"]
        finally:
            await taken.delete(force=True)

        copied = cli(
            *kube,
            "run",
            "--rm",
            "--name",
            unique_name("envfrom"),
            "-n",
            namespace,
            "--image",
            platform.base_image,
            "--env-from",
            "pod/demo",
            "--command",
            "sh -c 'echo greeting=$DEMO_GREETING'",
        )
        assert copied.returncode == 0, copied.stderr
        assert "greeting=hello from pod" in copied.stdout
    finally:
        await down(ctx, "default")
    assert await leftovers(ctx, docker) == []


async def test_a_removed_app_takes_its_holder_along(
    ctx: Context,
    platform: Platform,
    docker: aiodocker.Docker,
    namespace: str,
    report: Callable[[str], None],
) -> None:
    kube = ["--kubeconfig", str(platform.kubeconfig)]
    await up(ctx, "default")
    try:

        async def gone(ref: str) -> bool | None:
            try:
                await docker.containers.get(ref)
            except aiodocker.DockerError as exc:
                return True if exc.status == 404 else None
            return None

        # A detached `run --rm`: Docker removes the app when it exits, cargo the holder.
        short = unique_name("rm")
        started = cli(
            *kube, "run", "-d", "--rm", "--name", short, "-n", namespace,
            "--image", platform.base_image, "--command", "sleep 3",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert (await docker.containers.get(f"{short}-netns")) is not None
        await poll(lambda: gone(short), within=60, what=f"{short} auto-removed", interval=0.1)
        begin = time.monotonic()
        await poll(lambda: gone(f"{short}-netns"), within=30, what=f"{short}-netns removed")
        report(f"detached run --rm: app removed → holder removed {time.monotonic() - begin:.1f}s")

        # `docker rm -f` of an app: its holder goes too; another app's holder stays.
        kept, removed = unique_name("kept"), unique_name("rmf")
        for name in (kept, removed):
            result = cli(
                *kube, "run", "-d", "--name", name, "-n", namespace,
                "--image", platform.base_image, "--command", "sleep 300",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        await (await docker.containers.get(removed)).delete(force=True)
        await poll(lambda: gone(f"{removed}-netns"), within=30, what=f"{removed}-netns removed")
        holder = await (await docker.containers.get(f"{kept}-netns")).show()
        assert holder["State"]["Running"]
        # A stopped app is not a removed one: its holder stays for `docker start`.
        await (await docker.containers.get(kept)).stop(t=1)
        await anyio.sleep(2)
        assert (await (await docker.containers.get(f"{kept}-netns")).show())["State"]["Running"]
    finally:
        await down(ctx, "default")
    assert await leftovers(ctx, docker) == []


async def test_attached_up_shows_live_state_and_ctrl_c_only_detaches(
    ctx: Context, platform: Platform, docker: aiodocker.Docker
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "gefyra_async.cli",
        "--kubeconfig",
        str(platform.kubeconfig),
        "up",
        "--name",
        "e2e-live",
    ]
    try:
        async with await anyio.open_process(cmd) as proc:
            assert proc.stdout is not None
            seen = b""
            with anyio.fail_after(120):
                while b"] e2e-live: connected" not in seen:
                    seen += await proc.stdout.receive()
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                code = await proc.wait()
        text = seen.decode()
        assert code == 0
        assert "last handshake" in text
        assert " rx " in text
        # The connection outlives the supervisor, as documented.
        info = await docker.containers.get("gefyra-async-cargo-e2e-live")
        assert (await info.show())["State"]["Running"]
    finally:
        await down(ctx, "e2e-live")
    assert await leftovers(ctx, docker) == []
