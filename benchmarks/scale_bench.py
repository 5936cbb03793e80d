"""Scale benchmark: one stowaway as the cluster and the number of clients grow.

    bash tests/platform/platform.sh up          # as root, once
    /var/cache/gefyra-async/venv/bin/python benchmarks/scale_bench.py

One bridged echo Deployment (benchmarks/bridge_bench.py's setup: a rule-less bridge to a
local container), then, step by step:
  - the workload alone;
  - with 1,000 more pods in another namespace (Pending: no node matches their selector, so
    the node is not loaded, but every one is in stowaway's pod watch);
  - with 50 clients registered (Client objects with their own WireGuard keys and local
    subnets: lightweight peers, nothing behind them).
At each size: stowaway's RSS and CPU over 10 quiet seconds; then its pod is deleted and the
time is taken until the bridge answers locally again with its status 1/1 Bridged — state
rebuilt from nothing, among all those objects. With 50 clients, 10 more join and leave
while a request loop runs through the bridge (errors counted), and 1,000 concurrent
keep-alive connections go through the bridge. Writes benchmarks/results/scale.md and .json.
"""

from __future__ import annotations

import json
import platform as host_platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bridge_bench as bb  # the same workload and helpers

from gefyra_async.adapters.wgkeys import KeyPair
from gefyra_async.core import manifests
from gefyra_async.core.settings import Settings

CROWD_NS = "gefyra-async-bench-crowd"
PODS, CLIENTS, CHURN, CONNECTIONS = 1000, 50, 10, 1000
SETTINGS = Settings()
STOWAWAY = "gefyra-async.dev/component=stowaway"


LIVE_PODS = "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}\n{end}"


def stowaway_pod() -> str:
    """The one stowaway pod not being deleted, or "" while there is not exactly one."""
    out = bb.sh(
        [*bb.KUBECTL, "-n", SETTINGS.namespace, "get", "pods", "-l", STOWAWAY, "-o", LIVE_PODS]
    )
    live = [line.split()[0] for line in out.splitlines() if len(line.split()) == 1]
    return live[0] if len(live) == 1 else ""


def in_stowaway(*cmd: str) -> str:
    return bb.sh([*bb.KUBECTL, "-n", SETTINGS.namespace, "exec", stowaway_pod(), "-c",
                  "stowaway", "--", *cmd])  # fmt: skip


def usage() -> dict[str, float]:
    """Stowaway's resident memory (MiB, its agent process) and CPU (% of one core) over
    10 s in which nothing is asked of it."""

    def ticks() -> tuple[int, float]:
        fields = in_stowaway("cat", "/proc/1/stat").rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12]), time.monotonic()

    t0, m0 = ticks()
    time.sleep(10)
    t1, m1 = ticks()
    rss_kb = next(
        int(line.split()[1])
        for line in in_stowaway("cat", "/proc/1/status").splitlines()
        if line.startswith("VmRSS:")
    )
    return {"rss_mib": round(rss_kb / 1024, 1), "cpu_pct": round((t1 - t0) / (m1 - m0), 1)}


def bridge_status() -> dict[str, Any]:
    out = bb.sh([*bb.KUBECTL, "-n", SETTINGS.namespace, "get", "bridges.gefyra-async.dev",
                 "bench", "-o", "json"])  # fmt: skip
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def restart() -> float:
    """Delete stowaway's pod; seconds until a new one has the bridge answering locally and
    reporting 1/1 Bridged."""
    old = stowaway_pod()
    started = time.monotonic()
    bb.sh([*bb.KUBECTL, "-n", SETTINGS.namespace, "delete", "pod", old, "--wait=false"])
    deadline = started + 300
    while time.monotonic() < deadline:
        pod = stowaway_pod()
        if pod and pod != old:
            try:
                answer = bb.load("rps", "web", "80", "0.3", "1", "{}")
            except SystemExit:  # the path is not back yet: the first connection failed
                time.sleep(0.5)
                continue
            ready = {c["type"]: c for c in bridge_status().get("conditions") or []}.get("Ready")
            if (
                answer["served_by"] == [bb.LOCAL]
                and not answer["errors"]
                and ready
                and (ready["status"], ready["reason"]) == ("True", "Bridged")
                and bridge_status().get("bridgedText") == "1/1"
            ):
                return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    raise SystemExit(f"the bridge did not come back after a restart: {bridge_status()}")


def crowd() -> None:
    bb.sh([*bb.KUBECTL, "create", "namespace", CROWD_NS])
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"idle-{i:04d}", "labels": {"app": "idle"}},
            "spec": {
                "nodeSelector": {"gefyra-async.dev/no-such-node": "true"},
                "containers": [{"name": "main", "image": bb.ENV["BASE_IMAGE"]}],
            },
        }
        for i in range(PODS)
    ]
    for start in range(0, PODS, 200):
        items = {"apiVersion": "v1", "kind": "List", "items": pods[start : start + 200]}
        bb.sh([*bb.KUBECTL, "-n", CROWD_NS, "create", "-f", "-"], input=json.dumps(items))


def clients(first: int, count: int) -> list[str]:
    """COUNT Client objects (scale-FIRST, ...), each with its own key and local subnet."""
    made = [
        manifests.client(SETTINGS, f"scale-{i}", KeyPair.generate().public, f"10.200.{i}.0/24")
        for i in range(first, first + count)
    ]
    items = {"apiVersion": "v1", "kind": "List", "items": made}
    bb.sh([*bb.KUBECTL, "create", "-f", "-"], input=json.dumps(items))
    return [c["metadata"]["name"] for c in made]


def peers() -> int:
    out = bb.sh([*bb.KUBECTL, "-n", SETTINGS.namespace, "get", "clients.gefyra-async.dev",
                 "-o", "jsonpath={range .items[*]}{.status.tunnelAddress}\n{end}"])  # fmt: skip
    return sum(1 for line in out.splitlines() if line.strip())


def churn_under_load() -> dict[str, Any]:
    """CHURN clients join and leave while 8 connections keep requesting through the bridge."""
    loop = subprocess.Popen(
        [*bb.KUBECTL, "-n", bb.NS, "exec", "loadgen", "--", "python3", "-c", bb.LOAD,
         "rps", "web", "80", "20", "8", "{}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)
    names = clients(1000, CHURN)
    while peers() < CLIENTS + CHURN:  # every newcomer got its tunnel address
        time.sleep(0.5)
    bb.sh([*bb.KUBECTL, "-n", SETTINGS.namespace, "delete", "clients.gefyra-async.dev", *names])
    out, _ = loop.communicate(timeout=120)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {"requests": result["requests"], "errors": result["errors"],
            "served_by": result["served_by"]}  # fmt: skip


def main() -> None:
    subprocess.run([*bb.KUBECTL, "delete", "namespace", CROWD_NS, "--wait=true"],
                   capture_output=True, check=False)  # fmt: skip
    bb.setup()
    results: dict[str, Any] = {
        "host": host_platform.node(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sizes": [],
    }
    try:
        bb.bridge()
        sizes = results["sizes"]

        def step(label: str) -> None:
            pods = len(json.loads(bb.sh([*bb.KUBECTL, "get", "pods", "-A", "-o", "json"]))["items"])
            row = {"size": label, "pods": pods, "clients": peers(), **usage()}
            row["restart_to_bridged_s"] = restart()
            row.update({f"after_restart_{k}": v for k, v in usage().items()})
            sizes.append(row)
            print(json.dumps(row), flush=True)

        step("the bridged workload alone")
        crowd()
        step(f"+ {PODS} Pending pods")
        clients(1, CLIENTS - 1)
        while peers() < CLIENTS:
            time.sleep(0.5)
        step(f"+ {PODS} Pending pods, {CLIENTS} clients")
        results["churn"] = churn_under_load()
        results["connections"] = bb.load("rps", "web", "80", "10", str(CONNECTIONS), "{}")
    finally:
        subprocess.run(
            [*bb.KUBECTL, "-n", SETTINGS.namespace, "delete", "clients.gefyra-async.dev", "-l",
             "gefyra-async.dev/component=client", "--field-selector", "metadata.name!=bench"],
            capture_output=True, check=False,
        )  # fmt: skip
        subprocess.run([*bb.GA, "down", "--name", bb.CONNECTION], capture_output=True, check=False)
        for ns in (bb.NS, CROWD_NS):
            subprocess.run([*bb.KUBECTL, "delete", "namespace", ns, "--wait=false"],
                           capture_output=True, check=False)  # fmt: skip
    write(results)


def write(r: dict[str, Any]) -> None:
    out = bb.REPO / "benchmarks" / "results"
    (out / "scale.json").write_text(json.dumps(r, indent=2) + "\n")
    lines = [
        "# Scale benchmark",
        "",
        f"One run of `benchmarks/scale_bench.py` on {r['host']} (2 cores), {r['when']}. One "
        "stowaway; a rule-less bridge of an echo Deployment to a local container; stowaway's "
        "agent process measured over 10 quiet seconds before and after its pod was deleted.",
        "",
        "| size | pods in the cluster | clients | stowaway RSS MiB | CPU % | pod deleted → "
        "bridge 1/1 Bridged and answering locally, s | RSS MiB after | CPU % after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["sizes"]:
        lines.append(
            f"| {s['size']} | {s['pods']} | {s['clients']} | {s['rss_mib']} | {s['cpu_pct']} "
            f"| {s['restart_to_bridged_s']} | {s['after_restart_rss_mib']} "
            f"| {s['after_restart_cpu_pct']} |"
        )
    churn, conns = r.get("churn"), r.get("connections")
    if churn:
        lines += [
            "",
            f"{CHURN} clients joined (each got its tunnel address) and left while 8 "
            f"connections kept requesting through the bridge: {churn['requests']} requests, "
            f"{churn['errors']} errors, answered by {', '.join(churn['served_by'])}.",
        ]
    if conns:
        lines += [
            "",
            f"{conns['connections']} concurrent keep-alive connections through the bridge for "
            f"{conns['seconds']} s: {conns['requests']} requests ({conns['rps']} req/s), "
            f"{conns['errors']} errors.",
        ]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
