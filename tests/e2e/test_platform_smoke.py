"""Smoke tests of the local platform: the parts every later feature stands on.

Each test uses the real Docker engine and the real cluster that tests/platform/ started.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiodocker
import anyio
import pytest
from kubernetes_asyncio import client

from gefyra_async.adapters import containers
from tests.e2e.platform import (
    PLATFORM_SH,
    ImageLoader,
    Platform,
    demo_pod,
    fetch_script,
    is_root,
    parse_json_lines,
    poll,
    run_pod,
    unique_name,
    wait_pod,
)


async def start_demo(
    core: client.CoreV1Api, namespace: str, platform: Platform, name: str = "demo"
) -> client.V1Pod:
    await core.create_namespaced_pod(namespace, demo_pod(name, platform.demo_image))
    pod: client.V1Pod = await wait_pod(core, namespace, name)
    return pod


async def test_node_ready_and_pod_from_locally_built_image_runs(
    core: client.CoreV1Api,
    namespace: str,
    platform: Platform,
    image_loader: ImageLoader,
    tmp_path: Path,
) -> None:
    node = await core.read_node(platform.node_name)
    conditions = {c.type: c.status for c in node.status.conditions}
    assert conditions["Ready"] == "True"
    assert node.status.node_info.kubelet_version == f"v{platform.k8s_version}"

    # A fresh image, built now: its marker file proves the pod runs this very build.
    marker = unique_name("built")
    (tmp_path / "marker").write_text(marker + "\n")
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY marker /marker\n")
    image = await image_loader.build(tmp_path, image_loader.name("smoke-marker"))
    try:
        phase, log = await run_pod(core, namespace, image, ["cat", "/marker"])
    finally:
        await image_loader.remove(image)
    assert (phase, log.strip()) == ("Succeeded", marker)


async def test_service_cluster_ip_and_dns_name_reach_pod_from_another_pod(
    core: client.CoreV1Api, namespace: str, platform: Platform
) -> None:
    pod = await start_demo(core, namespace, platform)
    body: Any = {
        "metadata": {"name": "demo"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    service = await core.create_namespaced_service(namespace, body)
    cluster_ip = service.spec.cluster_ip
    dns_name = f"demo.{namespace}.svc.cluster.local"

    phase, log = await run_pod(
        core,
        namespace,
        platform.base_image,
        fetch_script(
            f"http://{cluster_ip}/via-ip", f"http://{dns_name}/via-dns", "http://demo/short"
        ),
    )

    assert phase == "Succeeded", log
    answers = {a["url"]: a["answer"] for a in parse_json_lines(log)}
    assert answers[f"http://{cluster_ip}/via-ip"]["served_by"] == pod.metadata.name
    assert answers[f"http://{dns_name}/via-dns"]["served_by"] == pod.metadata.name
    # The pod's DNS search list resolves the short name too.
    assert answers["http://demo/short"]["path"] == "/short"


async def test_nodeport_udp_service_reachable_from_docker_container(
    core: client.CoreV1Api, namespace: str, platform: Platform, docker: aiodocker.Docker
) -> None:
    pod = await start_demo(core, namespace, platform)
    body: Any = {
        "metadata": {"name": "demo-udp"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "demo"},
            "ports": [{"port": 9001, "targetPort": 9001, "protocol": "UDP"}],
        },
    }
    service = await core.create_namespaced_service(namespace, body)
    node_port = service.spec.ports[0].node_port
    # A datagram from a container on Docker's default network, as the tunnel's will come.
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.settimeout(2)\n"
        "for attempt in range(15):\n"
        "    s.sendto(b'ping-from-docker', (sys.argv[1], int(sys.argv[2])))\n"
        "    try:\n"
        "        print(s.recvfrom(1024)[0].decode(), flush=True)\n"
        "        break\n"
        "    except socket.timeout:\n"
        "        pass\n"
        "else:\n"
        "    sys.exit('no UDP answer')\n"
    )
    container = await docker.containers.run(
        {
            "Image": platform.base_image,
            "Cmd": ["python3", "-c", code, platform.node_ip, str(node_port)],
        },
        name=unique_name("smoke-udp-client"),
    )
    try:
        with anyio.fail_after(60):
            result = await container.wait()
        output = "".join(await container.log(stdout=True, stderr=True))
    finally:
        await container.delete(force=True)

    assert result["StatusCode"] == 0, output
    assert output.strip() == f"{pod.metadata.name}: ping-from-docker"


async def test_kubectl_exec_logs_and_port_forward(
    core: client.CoreV1Api, namespace: str, platform: Platform
) -> None:
    pod = await start_demo(core, namespace, platform)
    name = pod.metadata.name

    exec_result = await platform.kubectl_run("-n", namespace, "exec", name, "--", "hostname")
    assert exec_result.stdout.decode().strip() == name

    logs = await platform.kubectl_run("-n", namespace, "logs", name)
    assert f"demo-echo {name}: http :8080" in logs.stdout.decode()

    cmd = [
        str(platform.kubectl),
        f"--kubeconfig={platform.kubeconfig}",
        "-n",
        namespace,
        "port-forward",
        f"pod/{name}",
        ":8080",
    ]
    async with await anyio.open_process(cmd) as forward:
        assert forward.stdout is not None
        try:
            with anyio.fail_after(30):
                seen = b""
                while not (match := re.search(rb"127\.0\.0\.1:(\d+) -> 8080", seen)):
                    seen += await forward.stdout.receive()
            local_port = int(match.group(1))
            answer = await anyio.to_thread.run_sync(http_get, f"http://127.0.0.1:{local_port}/pf")
        finally:
            forward.terminate()
    assert answer["served_by"] == name
    assert answer["path"] == "/pf"


def http_get(url: str) -> dict[str, object]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


INTERCEPTOR = """
import http.server, subprocess
addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True)
print("netns:", addr.stdout.strip(), flush=True)
subprocess.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "8080",
                "-j", "REDIRECT", "--to-ports", "8081"], check=True)
print("redirect installed", flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"intercepted by the ephemeral container\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8081), Handler).serve_forever()
"""


async def test_ephemeral_container_with_net_admin_redirects_without_restart(
    core: client.CoreV1Api, namespace: str, platform: Platform
) -> None:
    pod = await start_demo(core, namespace, platform)
    name, pod_ip = pod.metadata.name, pod.status.pod_ip
    before = pod.status.container_statuses[0]
    assert before.restart_count == 0

    pod.spec.ephemeral_containers = [
        client.V1EphemeralContainer(
            name="interceptor",
            image=platform.base_image,
            image_pull_policy="Never",
            command=["python3", "-u", "-c", INTERCEPTOR],
            security_context=client.V1SecurityContext(
                capabilities=client.V1Capabilities(add=["NET_ADMIN"])
            ),
        )
    ]
    await core.replace_namespaced_pod_ephemeralcontainers(name, namespace, pod)

    async def interceptor_log() -> str | None:
        pod = await core.read_namespaced_pod(name, namespace)
        statuses = pod.status.ephemeral_container_statuses or []
        if not any(s.state.running is not None for s in statuses):
            return None
        log: str = await core.read_namespaced_pod_log(name, namespace, container="interceptor")
        return log if "redirect installed" in log else None

    log = await poll(
        interceptor_log, within=60, what="the ephemeral container installed its redirect"
    )
    # It shares the pod's network namespace: it sees the pod's own address.
    assert f"inet {pod_ip}/" in log

    # From outside the pod, port 8080 now lands on the ephemeral container ...
    phase, out = await run_pod(
        core,
        namespace,
        platform.base_image,
        [
            "python3",
            "-c",
            "import sys, urllib.request as u\n"
            "print(u.urlopen(sys.argv[1], timeout=10).read().decode())",
            f"http://{pod_ip}:8080/",
        ],
    )
    assert (phase, out.strip()) == ("Succeeded", "intercepted by the ephemeral container")

    # ... while the pod's own loopback still reaches the original app.
    inside = await platform.kubectl_run(
        "-n",
        namespace,
        "exec",
        name,
        "-c",
        "echo",
        "--",
        *fetch_script("http://127.0.0.1:8080/inside"),
    )
    assert parse_json_lines(inside.stdout.decode())[0]["answer"]["served_by"] == name

    after = (await core.read_namespaced_pod(name, namespace)).status.container_statuses[0]
    assert after.restart_count == 0
    assert after.state.running.started_at == before.state.running.started_at


def guard_drops(platform: Platform, cidr: str) -> int:
    """Packets the platform's uplink guard has dropped for CIDR so far."""
    out = subprocess.run(
        ["iptables", "-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if platform.guard_comment in line and cidr in line:
            return int(line.split()[0])
    raise AssertionError(f"the uplink guard for {cidr} is not installed:\n{out}")


@pytest.mark.skipif(not is_root(), reason="reading the iptables counters needs root")
async def test_service_range_traffic_without_rules_never_leaves_the_machine(
    core: client.CoreV1Api, namespace: str, platform: Platform
) -> None:
    # An address in the service range that no Service holds: kube-proxy has no rule for it.
    taken = {s.spec.cluster_ip for s in (await core.list_service_for_all_namespaces()).items}
    target = "10.111.255.254"
    assert target not in taken
    before = guard_drops(platform, platform.service_cidr)  # also: the guard is in place

    phase, log = await run_pod(
        core,
        namespace,
        platform.base_image,
        [
            "python3",
            "-c",
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('{target}', 80), timeout=3)\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('failed:', e)\n",
        ],
    )
    assert phase == "Succeeded"
    assert log.startswith("failed:"), log
    assert guard_drops(platform, platform.service_cidr) > before


# From a container on a connection network: TCP to each target, UDP to the NodePort.
ISOLATION_PROBE = """
import json, socket, sys
targets, node_ip, node_port = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
out = {}
for name, (host, port) in targets.items():
    try:
        socket.create_connection((host, port), timeout=2).close()
        out[name] = "reached"
    except OSError as e:
        out[name] = "blocked"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
out["udp-nodeport"] = "blocked"
for attempt in range(10):
    s.sendto(b"ping", (node_ip, node_port))
    try:
        out["udp-nodeport"] = s.recvfrom(1024)[0].decode()
        break
    except socket.timeout:
        pass
print(json.dumps(out), flush=True)
"""


async def restart_kube_proxy() -> None:
    done = await anyio.run_process(["bash", str(PLATFORM_SH), "restart", "kube-proxy"], check=False)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.skipif(not is_root(), reason="restarting kube-proxy needs root")
async def test_connection_networks_reach_the_cluster_only_through_node_addresses(
    core: client.CoreV1Api, namespace: str, platform: Platform, docker: aiodocker.Docker
) -> None:
    """The platform's Docker host is also the node: its kube-proxy and pod routes must not
    carry traffic of gefyra-async's connection networks, or e2e tests would prove nothing
    about the tunnel. Only what a laptop could reach gets through (a node's NodePort),
    also after kube-proxy restarted and put its rules first again."""
    pod = await start_demo(core, namespace, platform)
    service: Any = {
        "metadata": {"name": "demo"},
        "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    udp_service: Any = {
        "metadata": {"name": "demo-udp"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "demo"},
            "ports": [{"port": 9001, "targetPort": 9001, "protocol": "UDP"}],
        },
    }
    cluster_ip = (await core.create_namespaced_service(namespace, service)).spec.cluster_ip
    node_port = (
        (await core.create_namespaced_service(namespace, udp_service)).spec.ports[0].node_port
    )
    # The Service's rules are written once an endpoint exists; a pod asks it to be sure.
    phase, log = await run_pod(
        core, namespace, platform.base_image, fetch_script(f"http://{cluster_ip}/")
    )
    assert phase == "Succeeded", log

    net = unique_name("smoke-conn-net")
    labels = {"gefyra-async.dev/e2e-test": "true"}
    await containers.create_network(docker, net, labels)
    made: list[Any] = []
    try:
        # A "gateway" container (as cargo is), and a probe routing everything through it:
        # the probe's packets to cluster addresses are bridged frames to the gateway,
        # which does not forward them — any answer came around it.
        gateway = await docker.containers.run(
            {
                "Image": platform.base_image,
                "Cmd": ["sleep", "infinity"],
                "HostConfig": {"NetworkMode": net},
            },
            name=unique_name("smoke-gateway"),
        )
        made.append(gateway)
        gateway_ip = (await gateway.show())["NetworkSettings"]["Networks"][net]["IPAddress"]
        api_service = await core.read_namespaced_service("kubernetes", "default")
        targets = {
            "service": [cluster_ip, 80],
            "pod": [pod.status.pod_ip, 8080],
            # A Service whose endpoint is the host itself (the API server).
            "api-service": [api_service.spec.cluster_ip, 443],
        }

        async def probe(via_gateway: bool) -> dict[str, str]:
            script = ISOLATION_PROBE
            command = [
                "python3",
                "-c",
                script,
                json.dumps(targets),
                platform.node_ip,
                str(node_port),
            ]
            if via_gateway:
                command = [
                    "sh",
                    "-c",
                    f'ip route replace default via {gateway_ip} && exec "$@"',
                    "probe",
                    *command,
                ]
            container = await docker.containers.run(
                {
                    "Image": platform.base_image,
                    "Cmd": command,
                    "HostConfig": {"NetworkMode": net, "CapAdd": ["NET_ADMIN"]},
                },
                name=unique_name("smoke-isolation-probe"),
            )
            made.append(container)
            with anyio.fail_after(90):
                result = await container.wait()
            output = "".join(await container.log(stdout=True, stderr=True))
            assert result["StatusCode"] == 0, output
            found: dict[str, str] = json.loads(output.strip().splitlines()[-1])
            return found

        blocked = {"service": "blocked", "pod": "blocked", "api-service": "blocked"}
        nodeport = {"udp-nodeport": f"{pod.metadata.name}: ping"}
        assert await probe(via_gateway=False) == {**blocked, **nodeport}
        # The leak that was: the host's kube-proxy DNATed the bridged frames to a pod.
        around = await probe(via_gateway=True)
        assert {k: around[k] for k in blocked} == blocked, around

        await restart_kube_proxy()
        assert await probe(via_gateway=False) == {**blocked, **nodeport}
        around = await probe(via_gateway=True)
        assert {k: around[k] for k in blocked} == blocked, around
        status = await anyio.run_process(["bash", str(PLATFORM_SH), "status"], check=False)
        assert "connection networks isolated: yes" in status.stdout.decode()
    finally:
        for container in made:
            await container.delete(force=True)
        await containers.remove_network(docker, net)
