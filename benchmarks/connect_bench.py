"""Connect benchmarks, side by side in one run, on the local platform.

    bash tests/platform/platform.sh up          # as root, once
    /var/cache/gefyra-async/venv/bin/python benchmarks/connect_bench.py

Measures, with the same probe (benchmarks/netprobe.py) and the same server pod:
TCP round-trip latency (p50/p99 of 1000 sequential 32-byte round trips) and TCP
throughput (10 s, one stream) from
  - a local container started by `gefyra-async run` (through the WireGuard tunnel),
  - another pod (pod-to-pod: the limit),
  - `kubectl port-forward` from the host,
  - raw wireguard-go between two network namespaces (the tunnel alone): the build the images
    carry (upstream module) and Debian's, side by side; and the bare veth;
`gefyra-async up` time cold (cluster side not installed) and warm (installed);
DNS lookup latency from the local container through cargo's forwarder vs straight to the
cluster DNS through the tunnel. Writes benchmarks/results/connect.md and .json.
"""

from __future__ import annotations

import json
import os
import platform as host_platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROBE = (REPO / "benchmarks" / "netprobe.py").read_text()
ENV = dict(
    line.split("=", 1)
    for line in subprocess.run(
        ["bash", str(REPO / "tests/platform/platform.sh"), "env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
)
KUBECTL = [ENV["KUBECTL"], f"--kubeconfig={ENV['KUBECONFIG']}"]
# The product's images come from the platform's registry, as a user's from theirs.
os.environ.setdefault("GEFYRA_ASYNC_REGISTRY", ENV["PRODUCT_REGISTRY"])
GA = [str(Path(sys.executable).parent / "gefyra-async"), "--kubeconfig", ENV["KUBECONFIG"]]
NS = "gefyra-async-bench"
PORT = 7000
RTT_COUNT, SECONDS, STREAMS = 1000, 10, 20


def sh(cmd: list[str], **kw: Any) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed: {result.stderr.strip()[-2000:]}")
    return str(result.stdout)


def last_json(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads([x for x in text.splitlines() if x.startswith("{")][-1])
    return data


def pod_run(name: str, *args: str) -> dict[str, Any]:
    # Not `kubectl run -i`: a probe that finishes before kubectl attaches loses its output.
    sh(
        [
            *KUBECTL,
            "-n",
            NS,
            "run",
            name,
            "--restart=Never",
            f"--image={ENV['BASE_IMAGE']}",
            "--image-pull-policy=Never",
            "--command",
            "--",
            "python3",
            "-c",
            PROBE,
            *args,
        ]
    )
    try:
        sh(
            [
                *KUBECTL,
                "-n",
                NS,
                "wait",
                "--for=jsonpath={.status.phase}=Succeeded",
                f"pod/{name}",
                "--timeout=300s",
            ],
            timeout=320,
        )
        return last_json(sh([*KUBECTL, "-n", NS, "logs", name]))
    finally:
        subprocess.run(
            [*KUBECTL, "-n", NS, "delete", "pod", name, "--wait=false"], capture_output=True
        )


def local_run(name: str, *args: str, connection: str = "bench") -> dict[str, Any]:
    out = sh(
        [
            *GA,
            "run",
            "--rm",
            "--connection",
            connection,
            "--name",
            name,
            "-n",
            NS,
            "--image",
            ENV["BASE_IMAGE"],
            "--command",
            shlex.join(["python3", "-c", PROBE, *args]),
        ],
        timeout=300,
    )
    return last_json(out)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    sh(cmd, timeout=600)
    return time.perf_counter() - t0


def free_port_pair() -> int:
    for port in range(20000, 30000, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise SystemExit("no free port pair")


def port_forward(pod: str) -> dict[str, dict[str, Any]]:
    port = free_port_pair()
    proc = subprocess.Popen(
        [
            *KUBECTL,
            "-n",
            NS,
            "port-forward",
            f"pod/{pod}",
            f"{port}:{PORT}",
            f"{port + 1}:{PORT + 1}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        while "Forwarding" not in proc.stdout.readline():
            pass
        probe = [sys.executable, str(REPO / "benchmarks/netprobe.py")]
        run = [*probe, "throughput", "127.0.0.1", str(port), str(SECONDS)]
        return {
            "rtt": last_json(sh([*probe, "rtt", "127.0.0.1", str(port), str(RTT_COUNT)])),
            "throughput": last_json(sh(run)),
            "parallel": last_json(sh([*run, str(STREAMS)])),
        }
    finally:
        proc.terminate()
        proc.wait()


def wireguard_builds() -> list[tuple[str, str]]:
    """(label, binary) of every wireguard-go build to compare: the one the images carry
    (GEFYRA_ASYNC_WIREGUARD_GO, as platform.sh reports it) and Debian's, when they differ."""
    builds = [(f"wireguard-go {version(ENV['WIREGUARD_GO'])} (the images')", ENV["WIREGUARD_GO"])]
    debian = "/usr/bin/wireguard-go"
    if Path(debian).exists() and Path(debian).resolve() != Path(ENV["WIREGUARD_GO"]).resolve():
        builds.append((f"wireguard-go {version(debian)} (Debian's)", debian))
    return builds


def version(binary: str) -> str:
    return sh([binary, "--version"]).split()[1]


def netns_runs() -> dict[str, dict[str, dict[str, Any]]]:
    """Raw wireguard-go (each build) and the bare veth between two netns."""
    sys.path.insert(0, str(REPO))
    import anyio

    from gefyra_async.adapters.wgkeys import KeyPair
    from gefyra_async.adapters.wireguard import PeerConfig, Uapi

    a, b = "ga-bench-a", "ga-bench-b"
    for ns in (a, b):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        sh(["ip", "netns", "add", ns])
    procs: list[subprocess.Popen[str]] = []
    run = ["ip", "netns", "exec", a, sys.executable, "-c", PROBE]

    def measure(target: str) -> dict[str, Any]:
        return {
            "rtt": last_json(sh([*run, "rtt", target, str(PORT), str(RTT_COUNT)])),
            "throughput": last_json(sh([*run, "throughput", target, str(PORT), str(SECONDS)])),
        }

    try:
        sh(["ip", "link", "add", "gabva", "netns", a, "type", "veth", "peer", "gabvb", "netns", b])
        for ns, dev, ip_ in ((a, "gabva", "10.251.9.1"), (b, "gabvb", "10.251.9.2")):
            sh(["ip", "-n", ns, "addr", "add", f"{ip_}/30", "dev", dev])
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        server = subprocess.Popen(
            ["ip", "netns", "exec", b, sys.executable, "-c", PROBE, "serve", str(PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(server)
        assert server.stdout is not None
        server.stdout.readline()
        results = {}
        for label, binary in wireguard_builds():
            ka, kb = KeyPair.generate(), KeyPair.generate()
            tunnels = [
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, binary, "-f", dev],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for ns, dev in ((a, "gabwa"), (b, "gabwb"))
            ]
            procs += tunnels
            time.sleep(1)

            async def configure(ka: Any = ka, kb: Any = kb) -> None:
                await Uapi("gabwa").set(
                    private_key=ka.private,
                    listen_port=51900,
                    peers=[PeerConfig(kb.public, ["10.251.10.2/32"], "10.251.9.2:51901")],
                )
                await Uapi("gabwb").set(
                    private_key=kb.private,
                    listen_port=51901,
                    peers=[PeerConfig(ka.public, ["10.251.10.1/32"], "10.251.9.1:51900")],
                )

            anyio.run(configure)
            for ns, dev, ip_ in ((a, "gabwa", "10.251.10.1"), (b, "gabwb", "10.251.10.2")):
                sh(["ip", "-n", ns, "addr", "add", f"{ip_}/24", "dev", dev])
                sh(["ip", "-n", ns, "link", "set", dev, "mtu", "1380", "up"])
            results[f"{label} between two netns"] = measure("10.251.10.2")
            for t in tunnels:
                t.terminate()
                t.wait()
        results["bare veth between two netns"] = measure("10.251.9.2")
        return results
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def udp_blocked() -> Iterator[None]:
    """Drop UDP from the connection networks to the node, as a firewall in front of private
    nodes would (the tests' rule; see tests/e2e/test_api_transport.py)."""
    comment = "gefyra-async-bench-udp-blocked"
    rule = ["PREROUTING", "-s", "172.30.0.0/16", "-d", ENV["NODE_IP"], "-p", "udp",
            "-m", "comment", "--comment", comment, "-j", "DROP"]  # fmt: skip
    sh(["iptables", "-t", "mangle", "-I", *rule])
    try:
        yield
    finally:
        sh(["iptables", "-t", "mangle", "-D", *rule])


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run the benchmarks as root (they create network namespaces)")
    results: dict[str, Any] = {"paths": {}, "up": {}, "dns": {}}
    sh([*GA, "down", "--all"])
    sh([*KUBECTL, "create", "namespace", NS])
    try:
        sh(
            [
                *KUBECTL,
                "-n",
                NS,
                "run",
                "probe-server",
                f"--image={ENV['BASE_IMAGE']}",
                "--image-pull-policy=Never",
                "--restart=Never",
                "--command",
                "--",
                "python3",
                "-c",
                PROBE,
                "serve",
                str(PORT),
            ]
        )
        sh(
            [
                *KUBECTL,
                "-n",
                NS,
                "wait",
                "--for=condition=Ready",
                "pod/probe-server",
                "--timeout=120s",
            ]
        )
        pod_ip = sh(
            [*KUBECTL, "-n", NS, "get", "pod", "probe-server", "-o", "jsonpath={.status.podIP}"]
        )
        time.sleep(2)

        results["up"]["cold (installs the cluster side)"] = timed(
            [*GA, "up", "--detach", "--name", "bench"]
        )
        results["up"]["warm (cluster side running)"] = timed(
            [*GA, "up", "--detach", "--name", "bench2"]
        )
        sh([*GA, "down", "--name", "bench2"])
        results["up"]["warm, --transport api"] = timed(
            [*GA, "up", "--detach", "--name", "bench-api", "--transport", "api"]
        )
        with udp_blocked():
            results["up"]["warm, UDP blocked (auto: 6 s of UDP, then the API)"] = timed(
                [*GA, "up", "--detach", "--name", "bench-auto"]
            )
        sh([*GA, "down", "--name", "bench-auto"])

        def tunnel(connection: str) -> dict[str, Any]:
            target = [pod_ip, str(PORT)]
            return {
                "rtt": local_run(
                    "bench-rtt", "rtt", *target, str(RTT_COUNT), connection=connection
                ),
                "throughput": local_run(
                    "bench-tp", "throughput", *target, str(SECONDS), connection=connection
                ),
                "parallel": local_run(
                    "bench-tp",
                    "throughput",
                    *target,
                    str(SECONDS),
                    str(STREAMS),
                    connection=connection,
                ),
            }

        paths = results["paths"]
        paths["local container → pod, tunnel over UDP (gefyra-async run)"] = tunnel("bench")
        paths["local container → pod, tunnel through the API server"] = tunnel("bench-api")
        paths["pod → pod in the cluster (the limit)"] = {
            "rtt": pod_run("bench-rtt", "rtt", pod_ip, str(PORT), str(RTT_COUNT)),
            "throughput": pod_run("bench-tp", "throughput", pod_ip, str(PORT), str(SECONDS)),
        }
        paths["host → pod via kubectl port-forward"] = port_forward("probe-server")
        paths.update(netns_runs())

        status = json.loads(sh([*GA, "status", "-o", "json"]))
        cargo_ip = sh(
            [
                "docker",
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                "gefyra-async-cargo-bench",
            ]
        ).strip()
        name = "kubernetes.default.svc.cluster.local"
        results["dns"]["local container → cargo's forwarder → cluster DNS"] = local_run(
            "bench-dns1", "dns", cargo_ip, name, "500"
        )
        results["dns"]["local container → cluster DNS directly (through the tunnel)"] = local_run(
            "bench-dns2", "dns", ENV["CLUSTER_DNS"], name, "500"
        )
        results["dns"]["pod → cluster DNS"] = pod_run(
            "bench-dns3", "dns", ENV["CLUSTER_DNS"], name, "500"
        )
        results["connections"] = status
    finally:
        subprocess.run([*GA, "down", "--all"], capture_output=True)
        subprocess.run([*KUBECTL, "delete", "namespace", NS, "--wait=false"], capture_output=True)
    write(results)


def cpu_per_gb(tp: dict[str, Any] | None) -> float | None:
    """Machine-wide CPU seconds spent per gigabyte carried (netprobe's busy fraction)."""
    if not tp or not tp.get("cpu_busy") or not tp.get("mbit_s"):
        return None
    return float(tp["cpu_busy"] * tp["cores"] * 8000 / tp["mbit_s"])


def _cpu_per_gb(tp: dict[str, Any] | None) -> str:
    cost = cpu_per_gb(tp)
    return "-" if cost is None else f"{cost:.2f}"


def _busy(tp: dict[str, Any] | None) -> str:
    return "-" if not tp or "cpu_busy" not in tp else f"{tp['cpu_busy']:.0%}"


def write(results: dict[str, Any]) -> None:
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "connect.json").write_text(json.dumps(results, indent=2) + "\n")
    limit = results["paths"]["pod → pod in the cluster (the limit)"]
    lines = [
        "# Connect benchmarks",
        "",
        f"One run of `benchmarks/connect_bench.py` on {host_platform.node()} "
        f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"RTT: {RTT_COUNT} sequential round trips of 32 bytes on one TCP connection; "
        f"throughput: one TCP stream for {SECONDS} s. Ratios against pod → pod.",
        "",
        f"| path | RTT p50 ms | RTT p99 ms | throughput Mbit/s | {STREAMS} streams Mbit/s "
        "| p50 vs limit | throughput vs limit | CPU busy | CPU s per GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def mbit(tp: dict[str, Any] | None) -> str:
        if tp is None:
            return "-"
        return f"{tp['mbit_s']}{'' if tp.get('confirmed_by_server', True) else ' *'}"

    for label, r in results["paths"].items():
        rtt, tp = r["rtt"], r["throughput"]
        lines.append(
            f"| {label} | {rtt['p50_ms']} | {rtt['p99_ms']} | {mbit(tp)} "
            f"| {mbit(r.get('parallel'))} "
            f"| {rtt['p50_ms'] / limit['rtt']['p50_ms']:.2f}x "
            f"| {r['throughput']['mbit_s'] / limit['throughput']['mbit_s']:.2f}x "
            f"| {_busy(tp)} | {_cpu_per_gb(tp)} |"
        )
    api = results["paths"].get("local container → pod, tunnel through the API server")
    forward = results["paths"].get("host → pod via kubectl port-forward")
    if api and forward and forward.get("parallel"):
        lines += [
            "",
            "API transport vs `kubectl port-forward` on the same path (API server → kubelet → "
            "pod): one stream "
            f"{api['throughput']['mbit_s'] / forward['throughput']['mbit_s']:.0%}, "
            f"{STREAMS} streams "
            f"{api['parallel']['mbit_s'] / forward['parallel']['mbit_s']:.0%} — the API "
            "transport carries every connection (and DNS) of the tunnel in one port-forward "
            f"stream, kubectl opens one stream per connection.",
        ]
        api_cost, forward_cost = cpu_per_gb(api["throughput"]), cpu_per_gb(forward["throughput"])
        if api_cost and forward_cost:
            ceiling = api["throughput"]["mbit_s"] / api["throughput"]["cpu_busy"]
            lines += [
                "",
                f"Per byte, the API transport costs the machine {api_cost / forward_cost:.1f}x "
                "the CPU of `kubectl port-forward` (two WireGuard ends and two relays on top "
                "of the same API server → kubelet → runtime path, all on these "
                f"{api['throughput']['cores']} cores): with every core busy it could carry at "
                f"most about {ceiling:.0f} Mbit/s, "
                f"{ceiling / forward['throughput']['mbit_s']:.0%} of what kubectl carried.",
            ]
    lines += [
        "",
        "\\* bytes sent until the proxy closed the connection: kubectl port-forward does not "
        "pass the server's byte count back after the client's half-close.",
    ]
    lines += ["", "| `gefyra-async up` | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in results["up"].items()]
    lines += [
        "",
        "| DNS lookup (A, 500 queries after 10 warm-ups) | p50 ms | p99 ms |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v['p50_ms']} | {v['p99_ms']} |" for k, v in results["dns"].items()]
    (out / "connect.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:] == ["--rewrite"]:  # the tables again from the last run's JSON
        write(json.loads((REPO / "benchmarks/results/connect.json").read_text()))
        raise SystemExit(0)
    if not Path(ENV.get("WIREGUARD_GO", "")).is_file():
        raise SystemExit("wireguard-go is not built: run tests/platform/platform.sh up first")
    main()
