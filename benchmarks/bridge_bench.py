"""Bridge benchmarks, side by side in one run, on the local platform.

    bash tests/platform/platform.sh up          # as root, once
    /var/cache/gefyra-async/venv/bin/python benchmarks/bridge_bench.py

One echo Deployment (the demo server) behind a Service, one load-generator pod
(benchmarks/httpload.py, standard library asyncio) calling the Service, and one local
container (the same echo server, started by `gefyra-async run`). Measured, each with the
same client and server program:
  - direct: the request served by the pod, no bridge (the limit);
  - header bridge, matching request: carrier → stowaway → tunnel → local container;
  - header bridge, other request: carrier → the original app on the pod's loopback;
  - bridge without rules (raw TCP splice) → local container;
latency p50/p99 of 1000 sequential requests on one keep-alive connection, requests/s on
1 and on 64 keep-alive connections (5 s each); and the time from starting
`gefyra-async bridge` to the first request answered by the local container.
Writes benchmarks/results/bridge.md and .json.
"""

from __future__ import annotations

import json
import os
import platform as host_platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOAD = (REPO / "benchmarks" / "httpload.py").read_text()
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
NS = "gefyra-async-bench-bridge"
CONNECTION = "bench"
LOCAL = "bench-local"
COUNT, SECONDS = 1000, 5.0


def sh(cmd: list[str], **kw: Any) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:8])} ... failed: {result.stderr.strip()[-2000:]}")
    return str(result.stdout)


def load(*args: str) -> dict[str, Any]:
    out = sh([*KUBECTL, "-n", NS, "exec", "loadgen", "--", "python3", "-c", LOAD, *args])
    return dict(json.loads(out.strip().splitlines()[-1]))


def measure(headers: dict[str, str]) -> dict[str, Any]:
    h = json.dumps(headers)
    lat = load("latency", "web", "80", str(COUNT), h)
    one = load("rps", "web", "80", str(SECONDS), "1", h)
    many = load("rps", "web", "80", str(SECONDS), "64", h)
    return {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "rps_1": one["rps"],
        "rps_64": many["rps"],
        "errors": one["errors"] + many["errors"],
        "served_by": sorted(set(lat["served_by"]) | set(one["served_by"]) | set(many["served_by"])),
    }


def setup() -> None:
    sh([*KUBECTL, "delete", "namespace", NS, "--ignore-not-found", "--wait=true"])
    sh([*KUBECTL, "create", "namespace", NS])
    manifest = (REPO / "tests/platform/manifests/demo.yaml").read_text()
    manifest = manifest.replace("demo-echo", "web").replace("@IMAGE@", ENV["DEMO_IMAGE"])
    sh([*KUBECTL, "-n", NS, "apply", "-f", "-"], input=manifest)
    sh([*KUBECTL, "-n", NS, "run", "loadgen", f"--image={ENV['BASE_IMAGE']}",
        "--image-pull-policy=Never", "--command", "--", "sleep", "infinity"])  # fmt: skip
    sh([*KUBECTL, "-n", NS, "rollout", "status", "deployment/web", "--timeout=120s"])
    sh([*KUBECTL, "-n", NS, "wait", "pod/loadgen", "--for=condition=Ready", "--timeout=120s"])
    sh([*GA, "up", "--name", CONNECTION, "--detach"])
    subprocess.run(
        ["docker", "rm", "-f", LOCAL, f"{LOCAL}-netns"], capture_output=True, check=False
    )
    sh([*GA, "run", "--connection", CONNECTION, "--detach", "--name", LOCAL, "-n", NS,
        "--image", ENV["DEMO_IMAGE"], "--env", f"SERVED_BY={LOCAL}"])  # fmt: skip


def bridge(*rules: str) -> float:
    """Start `bridge`; returns seconds from its start to the first locally served answer."""
    headers = json.dumps({"X-Dev": "bench"})
    waiter = subprocess.Popen(
        [*KUBECTL, "-n", NS, "exec", "loadgen", "--", "python3", "-c", LOAD,
         "first", "web", "80", LOCAL, headers, "60"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2)  # the waiter is polling
    started = time.time()
    sh([*GA, "bridge", "deploy/web", "-n", NS, "-p", "8080:8080", "--local", LOCAL,
        "--connection", CONNECTION, "--name", "bench", *rules])  # fmt: skip
    out, _ = waiter.communicate(timeout=90)
    answered = json.loads(out.strip().splitlines()[-1])["answered_at"]
    if answered is None:
        raise SystemExit("the bridge never answered")
    return float(answered) - started


def main() -> None:
    setup()
    results: dict[str, Any] = {
        "host": host_platform.node(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        results["direct"] = measure({})
        results["bridge_to_first_answer_header_s"] = round(bridge("--header", "X-Dev=bench"), 3)
        results["header_matched"] = measure({"X-Dev": "bench"})
        results["header_unmatched"] = measure({})
        sh([*GA, "unbridge", "bench"])
        results["bridge_to_first_answer_raw_s"] = round(bridge(), 3)
        results["raw"] = measure({})
        sh([*GA, "unbridge", "bench"])
    finally:
        sh([*GA, "down", "--name", CONNECTION])
        sh([*KUBECTL, "delete", "namespace", NS, "--wait=false"])
    write(results)


def write(r: dict[str, Any]) -> None:
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "bridge.json").write_text(json.dumps(r, indent=2) + "\n")
    d = r["direct"]
    rows = [
        ("pod serves the request itself, no bridge (the limit)", d),
        ("header bridge, matching request → local container", r["header_matched"]),
        ("header bridge, other request → original app via carrier", r["header_unmatched"]),
        ("bridge without rules (raw TCP) → local container", r["raw"]),
    ]
    lines = [
        "# Bridge benchmarks",
        "",
        f"One run of `benchmarks/bridge_bench.py` on {r['host']} (2 cores), {r['when']}. "
        f"Client: `benchmarks/httpload.py` in a pod, through the Service; servers: the demo "
        f"echo server in the pod and in the local container. Latency: {COUNT} sequential "
        f"GETs on one keep-alive connection; requests/s: {SECONDS:.0f} s of back-to-back "
        "GETs on 1 and on 64 keep-alive connections. Ratios against the direct path.",
        "",
        "| path | p50 ms | p99 ms | req/s, 1 conn | req/s, 64 conns | p50 vs direct "
        "| req/s (64) vs direct | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {m['p50_ms']} | {m['p99_ms']} | {m['rps_1']} | {m['rps_64']} | "
            f"{m['p50_ms'] / d['p50_ms']:.2f}x | {m['rps_64'] / d['rps_64']:.2f}x | {m['errors']} |"
        )
    lines += [
        "",
        "| from starting `gefyra-async bridge` to the first request answered locally | seconds |",
        "|---|---:|",
        "| header bridge (carrier added to the running pod) "
        f"| {r['bridge_to_first_answer_header_s']} |",
        "| bridge without rules (the carrier of the first bridge, idle since, reused) "
        f"| {r['bridge_to_first_answer_raw_s']} |",
        "",
    ]
    (out / "bridge.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
