"""``gefyra-async``: the command line, following kubectl's conventions.

Every failure the user can fix ends with one sentence on stderr and exit status 1;
usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from gefyra_async import __version__
from gefyra_async.adapters import containers, docker_engine
from gefyra_async.api import bridges as bridge_api
from gefyra_async.api import connection as conn_api
from gefyra_async.api import images as images_api
from gefyra_async.api import install as install_api
from gefyra_async.api import runner as run_api
from gefyra_async.api import transport as transport_api
from gefyra_async.api.context import Context, UserError, open_context
from gefyra_async.core import images as image_names
from gefyra_async.core import names
from gefyra_async.core.logging import configure_logging
from gefyra_async.core.settings import Settings

log = structlog.get_logger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gefyra-async",
        description="Run local containers as if they were pods of a Kubernetes cluster.",
    )
    p.add_argument("--version", action="version", version=f"gefyra-async {__version__}")
    p.add_argument(
        "--kubeconfig", help="path of the kubeconfig (default: $KUBECONFIG or ~/.kube/config)"
    )
    p.add_argument("--context", help="the kubeconfig context to use")
    p.add_argument("--debug", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="install the cluster side if missing and connect")
    up.add_argument("--name", default="default", help="connection name (default: default)")
    up.add_argument(
        "--endpoint",
        help="host:port where the cluster's tunnel UDP port is reached "
        "(default: a Ready node's address and the NodePort, or the LoadBalancer's)",
    )
    up.add_argument("--detach", "-d", action="store_true", help="return once connected")
    up.add_argument(
        "--service-type",
        choices=["NodePort", "LoadBalancer"],
        help="how the cluster exposes the tunnel (default: NodePort)",
    )
    up.add_argument(
        "--transport",
        choices=["auto", "udp", "api"],
        help="how the tunnel travels: UDP to the tunnel Service, else through the Kubernetes "
        "API server (auto, the default); or only one of them",
    )
    up.add_argument(
        "--upgrade",
        action="store_true",
        help="replace a cluster side of another version with this one (in place)",
    )
    _registry_option(up)

    inst = sub.add_parser(
        "install",
        help="print the cluster side as YAML (for GitOps), or apply it (--apply)",
        description="Prints every object of the cluster side (namespace, CRDs, RBAC, "
        "stowaway, Services) as YAML; with --apply, creates or updates them and waits "
        "until stowaway is available.",
    )
    inst.add_argument("--apply", action="store_true", help="apply to the cluster and wait")
    inst.add_argument("--namespace", help="namespace of the cluster side (default: gefyra-async)")
    inst.add_argument("--service-type", choices=["NodePort", "LoadBalancer"])
    inst.add_argument("--port", type=int, help="the tunnel's NodePort (default: 31820)")
    inst.add_argument("--mtu", type=int, help="MTU of the tunnel (default: 1380)")
    inst.add_argument(
        "--service-annotation",
        action="append",
        default=[],
        metavar="K=V",
        help="annotation of the tunnel Service (e.g. for a cloud load balancer); repeatable",
    )
    inst.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    _registry_option(inst)

    uninst = sub.add_parser(
        "uninstall", help="remove the cluster side (bridges, clients, everything) and list it"
    )
    uninst.add_argument("--namespace", help="namespace of the cluster side (default: gefyra-async)")
    uninst.add_argument("-o", "--output", choices=["text", "json"], default="text")

    img = sub.add_parser("images", help="build (and push) the cargo, stowaway and carrier images")
    img_sub = img.add_subparsers(dest="images_cmd", required=True)
    build = img_sub.add_parser(
        "build",
        help="build the images from this installed package",
        description="Builds <registry>/<component>:<version> for cargo, stowaway and "
        "carrier from the installed package (Dockerfiles, code, dependencies); with --push, "
        "pushes them, so a team can serve them from its own registry.",
    )
    build.add_argument("--push", action="store_true", help="push the images to the registry")
    build.add_argument(
        "--base", help="base image with python3 (default: python:3.11-slim-bookworm)"
    )
    build.add_argument(
        "--base-python", default="3.11", help="the base image's Python version (default: 3.11)"
    )
    build.add_argument(
        "--wireguard-go",
        metavar="PATH",
        help="a prebuilt static wireguard-go (default: built from its Go module with local Go)",
    )
    build.add_argument(
        "--component",
        action="append",
        choices=list(image_names.COMPONENTS),
        help="only this image (repeatable; default: all three)",
    )
    _registry_option(build)

    down = sub.add_parser("down", help="remove a connection (and the cluster side with the last)")
    down.add_argument("--name", default="default", help="connection name (default: default)")
    down.add_argument(
        "--all", action="store_true", help="remove every connection and the cluster side"
    )

    run = sub.add_parser("run", help="run a local container inside the cluster's network")
    run.add_argument("--image", required=True)
    run.add_argument("--name", required=True, help="container name")
    run.add_argument("-n", "--namespace", help="namespace whose DNS names resolve unqualified")
    run.add_argument("--connection", default="default")
    run.add_argument("--command", help="the command to run, split like a shell would")
    run.add_argument("--env", action="append", default=[], metavar="K=V")
    run.add_argument("--env-from", metavar="KIND/NAME[/CONTAINER]")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST")
    run.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CONTAINER")
    run.add_argument("--detach", "-d", action="store_true")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument(
        "--pull",
        choices=["always", "missing", "never"],
        default="missing",
        help="pull the image: always, when Docker lacks it (default), or never",
    )

    br = sub.add_parser(
        "bridge",
        help="send traffic of a cluster workload to a local container",
        description="gefyra-async bridge KIND/NAME[/CONTAINER] -p REMOTE:LOCAL --local CONTAINER "
        "[rules]; or: bridge list; bridge inspect NAME. Without rules every connection to "
        "the ports goes to the local container; with rules only matching HTTP requests do "
        "(all rules must match), the rest keeps going to the original app.",
    )
    br.add_argument(
        "target", help="deploy/NAME, sts/NAME or pod/NAME[/CONTAINER]; or list, inspect"
    )
    br.add_argument("bridge_name", nargs="?", metavar="NAME", help="(inspect) the bridge")
    br.add_argument("-n", "--namespace", help="namespace of the target (default: the context's)")
    br.add_argument(
        "-p", "--port", action="append", default=[], metavar="REMOTE:LOCAL", help="repeatable"
    )
    br.add_argument("--local", metavar="CONTAINER", help="the local container that takes it")
    br.add_argument("--name", help="name of the bridge (default: <connection>-<local>-<target>)")
    br.add_argument("--connection", default="default")
    for flag, text in (
        ("header", "header equals: NAME=VALUE"),
        ("header-prefix", "header starts with: NAME=PREFIX"),
        ("header-regex", "header matches (re.search): NAME=REGEX"),
        ("path", "path equals"),
        ("path-prefix", "path starts with"),
        ("path-regex", "path matches (re.search)"),
    ):
        br.add_argument(f"--{flag}", action="append", default=[], help=f"rule: {text}")
    br.add_argument("--no-wait", action="store_true", help="return once the bridge is written")
    br.add_argument("-o", "--output", choices=["text", "json"], default="text")

    ub = sub.add_parser("unbridge", help="remove a bridge: the original app serves again")
    ub.add_argument("name", nargs="?", help="the bridge (see `bridge list`)")
    ub.add_argument("--all", action="store_true", help="remove every bridge (of --connection)")
    ub.add_argument("--connection", help="with --all: only this connection's bridges")
    ub.add_argument(
        "--restore",
        action="store_true",
        help="then roll the workload out: new pods without the idle carrier, as before",
    )

    # The API transport of a detached `up`, started by `up` itself (not listed in help).
    tr = sub.add_parser("transport")
    tr.add_argument("--name", required=True)

    for name, text in (
        ("status", "the state of connections"),
        ("list", "connections and containers"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("-o", "--output", choices=["text", "json"], default="text")
    return p


def _registry_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        help="registry/repository prefix of the product's images "
        "(default: $GEFYRA_ASYNC_REGISTRY or ghcr.io/gefyra-async)",
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _pairs(pairs: list[str], flag: str) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {pair!r} is not K=V")
        found[key] = value
    return found


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--env {pair!r} is not K=V")
        env[key] = value
    return env


def _age(iso: str | None) -> str:
    if not iso:
        return "never"
    then = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (datetime.datetime.now(datetime.UTC) - then).total_seconds()
    return f"{seconds:.0f}s ago"


def _global_args(args: argparse.Namespace) -> list[str]:
    found = []
    for flag in ("kubeconfig", "context"):
        if getattr(args, flag):
            found += [f"--{flag}", getattr(args, flag)]
    return found + (["--debug"] if args.debug else [])


def _detached_transport(ctx: Context, args: argparse.Namespace) -> conn_api.ApiTransportStarter:
    """The API transport in a detached process, so it outlives this command (attached or
    not: Ctrl-C detaches, the connection stays)."""

    async def start(name: str, endpoint: str) -> str:
        pid = transport_api.spawn_detached(name, _global_args(args), ctx.settings.transport)
        log_file = transport_api.state_dir() / f"transport-{name}.log"
        with anyio.move_on_after(ctx.settings.connect_timeout):
            while True:
                peer = await transport_api.cargo_peer(ctx, name)
                if peer and peer.get("endpoint") not in (None, endpoint):
                    return str(peer["endpoint"])
                if transport_api.detached_pid(name) != pid and not _alive(pid):
                    break
                await anyio.sleep(0.2)
        transport_api.stop_detached(name)
        raise UserError(f"the API transport of connection {name} did not start; see {log_file}")

    return start


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0


async def cmd_up(ctx: Context, args: argparse.Namespace) -> int:
    started = time.monotonic()
    running_before = transport_api.detached_pid(args.name)
    try:
        conn = await conn_api.up(
            ctx,
            args.name,
            endpoint=args.endpoint,
            upgrade=args.upgrade,
            progress=_progress,
            api_transport=_detached_transport(ctx, args),
        )
    except BaseException:
        # `up` removed what it made; the transport process it may have started goes too.
        if transport_api.detached_pid(args.name) not in (None, running_before):
            transport_api.stop_detached(args.name)
        raise
    print(
        f"connection {conn.name} is up in {time.monotonic() - started:.1f}s: tunnel address "
        f"{conn.tunnel_address}, endpoint {conn.endpoint}"
        + (" through the Kubernetes API server" if conn.transport == "api" else " (UDP)")
        + f", Docker network {conn.network}"
    )
    if args.detach:
        return 0
    print("Ctrl-C detaches; the connection stays up until `gefyra-async down`.")
    while True:
        for row in await conn_api.list_connections(ctx):
            if row["name"] != args.name:
                continue
            counters = await conn_api.traffic(ctx, args.name) or {}
            apps = await conn_api.apps(ctx, args.name)
            print(
                f"[{datetime.datetime.now():%H:%M:%S}] {row['name']}: "
                f"{'connected' if row['connected'] else 'NOT connected'} "
                f"over {row['transport'] or '?'}, "
                f"last handshake {_age(row['lastHandshake'])}, "
                f"rx {counters.get('rxBytes', '?')} B tx {counters.get('txBytes', '?')} B, "
                f"cargo {'running' if row['cargoRunning'] else 'stopped'}, "
                f"containers: {', '.join(apps) or 'none'}",
                flush=True,
            )
        await anyio.sleep(5)


async def cmd_down(ctx: Context, args: argparse.Namespace) -> int:
    removed = await conn_api.down(ctx, args.name, everything=args.all)
    print("removed: " + (", ".join(removed) if removed else "nothing (no such connection)"))
    return 0


async def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    found = [c for c in await conn_api.list_connections(ctx) if c["name"] == args.connection]
    if not found:
        raise UserError(
            f"there is no connection {args.connection!r}; start it with `gefyra-async up`"
        )
    conn = await conn_api.up(ctx, args.connection)  # adopts the running one
    spec = run_api.RunSpec(
        image=args.image,
        name=args.name,
        namespace=args.namespace,
        command=shlex.split(args.command) if args.command else None,
        env=_env(args.env),
        env_from=args.env_from,
        volumes=args.volume,
        ports=args.publish,
        # Attached, the CLI removes the container itself after reading all its output:
        # with Docker's auto-remove a short-lived container can vanish before its logs
        # are read.
        auto_remove=args.rm and args.detach,
        pull=args.pull,
    )
    container = await run_api.run(ctx, conn, spec, progress=_progress)
    if args.detach:
        print(container.name)
        return 0
    try:
        async for line in await containers.follow_logs(ctx.docker, container.id):
            sys.stdout.write(line)
            sys.stdout.flush()
        return await containers.wait_container(ctx.docker, container.id)
    finally:
        if args.rm:
            with anyio.CancelScope(shield=True):
                await run_api.remove(ctx, container.name)


async def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    rows = await conn_api.list_connections(ctx)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no connections")
    for row in rows:
        print(
            f"{row['name']}: {'connected' if row['connected'] else 'not connected'}, "
            f"transport {row['transport'] or '?'}, "
            f"tunnel {row['tunnelAddress']}, endpoint {row['endpoint']}, "
            f"last handshake {_age(row['lastHandshake'])}"
        )
    return 0


def _rules(args: argparse.Namespace) -> list[dict[str, str]]:
    rules = []
    for flag, match in (
        ("header", "exact"),
        ("header_prefix", "prefix"),
        ("header_regex", "regex"),
    ):
        rules += [bridge_api.header_rule(v, match) for v in getattr(args, flag)]
    for flag, match in (("path", "exact"), ("path_prefix", "prefix"), ("path_regex", "regex")):
        rules += [bridge_api.path_rule(v, match) for v in getattr(args, flag)]
    return rules


def _bridge_line(row: dict[str, Any]) -> str:
    bridged = sum(1 for p in row["pods"] if p.get("bridged"))
    rules = " AND ".join(
        f"{r.get('name', 'path')} {r['match']} {r['value']!r}" for r in row["rules"]
    )
    return (
        f"{row['name']}: {row['namespace']}/{row['target']} ports {','.join(row['ports'])} → "
        f"{row['local']} ({row['localAddress'] or '?'}), "
        f"{rules or 'every connection'}; {bridged}/{len(row['pods'])} pods bridged"
        + ("" if row["ready"] else f" [{row['reason']}: {row['message']}]")
    )


async def cmd_bridge(ctx: Context, args: argparse.Namespace) -> int:
    if args.target in ("list", "inspect"):
        if args.target == "list":
            rows = [bridge_api.summary(b) for b in await bridge_api.list_bridges(ctx)]
            if args.output == "json":
                print(json.dumps(rows, indent=2))
            else:
                print("\n".join(_bridge_line(r) for r in rows) or "no bridges")
            return 0
        if not args.bridge_name:
            raise UserError("say which bridge: gefyra-async bridge inspect NAME")
        obj = await bridge_api.get_bridge(ctx, args.bridge_name)
        if args.output == "json":
            print(json.dumps(obj, indent=2))
        else:
            row = bridge_api.summary(obj)
            print(_bridge_line(row))
            for pod in row["pods"]:
                delay = pod.get("readyToBridgedSeconds")
                print(
                    f"  {pod['pod']}: {'bridged' if pod['bridged'] else 'not bridged'}"
                    + (f" (Ready → bridged {delay:.2f}s)" if delay is not None else "")
                    + (f" {pod['stats']}" if pod.get("stats") else "")
                )
        return 0
    if args.bridge_name:
        raise UserError(f"unexpected argument {args.bridge_name!r}; use --name to name the bridge")
    if not args.local:
        raise UserError("say which local container takes the traffic: --local CONTAINER")
    if not args.port:
        raise UserError("say which ports to bridge: -p REMOTE:LOCAL (repeatable)")
    request = bridge_api.BridgeRequest(
        target=args.target,
        ports=args.port,
        local=args.local,
        namespace=args.namespace,
        rules=_rules(args),
        name=args.name,
        connection=args.connection,
    )
    started = time.monotonic()
    obj = await bridge_api.bridge(ctx, request, wait=not args.no_wait)
    if args.output == "json":
        print(json.dumps(obj, indent=2))
    else:
        print(_bridge_line(bridge_api.summary(obj)) + f" (in {time.monotonic() - started:.1f}s)")
    return 0


async def cmd_unbridge(ctx: Context, args: argparse.Namespace) -> int:
    if args.name and args.all:
        raise UserError("give a bridge name or --all, not both")
    removed = await bridge_api.unbridge(
        ctx, args.name, connection=args.connection, everything=args.all, restore=args.restore
    )
    print("removed: " + (", ".join(removed) if removed else "no bridges"))
    if args.restore and removed:
        print("rolling the bridged workloads out: their new pods are as before the bridge")
    return 0


def _dump(objects: Any, output: str) -> str:
    if output == "json":
        return json.dumps(objects, indent=2)
    import yaml

    items = objects if isinstance(objects, list) else [objects]
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in items)


async def cmd_install(args: argparse.Namespace, settings: Settings) -> int:
    annotations = _pairs(args.service_annotation, "--service-annotation")
    if not args.apply:
        objects = install_api.render(settings, service_annotations=annotations)
        print(_dump(objects if args.output == "yaml" else {"items": objects}, args.output))
        return 0
    async with open_context(args.kubeconfig, args.context, settings) as ctx:
        objects = await install_api.install(ctx, service_annotations=annotations)
    for obj in objects:
        where = obj["metadata"].get("namespace")
        print(
            f"applied {obj['kind']}/{obj['metadata']['name']}" + (f" -n {where}" if where else "")
        )
    print(f"stowaway is available in namespace {settings.namespace}")
    return 0


async def cmd_uninstall(args: argparse.Namespace, settings: Settings) -> int:
    async with open_context(args.kubeconfig, args.context, settings) as ctx:
        removed = await install_api.uninstall(ctx)
    if args.output == "json":
        print(json.dumps({"removed": removed}, indent=2))
    elif removed:
        print("\n".join(f"removed {r}" for r in removed))
    else:
        print(f"nothing to remove: no cluster side in namespace {settings.namespace}")
    return 0


async def cmd_images(args: argparse.Namespace, settings: Settings) -> int:
    docker = await open_docker_or_fail()
    try:
        built = await images_api.build(
            docker,
            registry=settings.registry,
            components=args.component or image_names.COMPONENTS,
            base=args.base,
            base_python=args.base_python,
            wireguard_go=args.wireguard_go,
            push=args.push,
            progress=_progress,
        )
    finally:
        await docker.close()
    for image in built:
        print(f"{image.ref} {image.digest or image.image_id}")
    return 0


async def cmd_transport(ctx: Context, args: argparse.Namespace) -> int:
    """The detached API transport of connection NAME (started by `up`)."""
    conn = await conn_api.get_connection(ctx, args.name)
    if conn is None:
        raise UserError(f"connection {args.name} has no running cargo; start it with `up`")
    await anyio.to_thread.run_sync(transport_api.write_pid, args.name)
    await transport_api.carry(ctx, args.name, conn.endpoint)
    return 0


# Commands that need neither the cluster nor Docker up front (they open what they need).
STANDALONE: dict[str, Callable[[argparse.Namespace, Settings], Awaitable[int]]] = {
    "install": cmd_install,
    "uninstall": cmd_uninstall,
    "images": cmd_images,
}

COMMANDS: dict[str, Callable[[Context, argparse.Namespace], Awaitable[int]]] = {
    "up": cmd_up,
    "down": cmd_down,
    "run": cmd_run,
    "status": cmd_status,
    "list": cmd_status,
    "bridge": cmd_bridge,
    "unbridge": cmd_unbridge,
    "transport": cmd_transport,
}


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings: defaults, GEFYRA_ASYNC_* variables, then the command's flags."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    changes: dict[str, Any] = {}
    admin = ("install", "uninstall")
    for flag, name, commands in (
        ("service_type", "tunnel_service_type", ("up", "install")),
        ("namespace", "namespace", admin),  # elsewhere -n is the workload's namespace
        ("port", "tunnel_port", ("install",)),  # bridge's -p/--port is another thing
        ("mtu", "tunnel_mtu", ("install",)),
        ("registry", "registry", ("up", "install", "images")),
        ("transport", "transport", ("up",)),
    ):
        value = getattr(args, flag, None)
        if value is not None and args.cmd in commands:
            changes[name] = value
    settings = dataclasses.replace(settings, **changes)
    try:
        image_names.check_registry(settings.registry)
    except image_names.ImageNameError as exc:
        raise UserError(str(exc)) from exc
    if not names.valid_namespace(settings.namespace):
        raise UserError(
            f"namespace {settings.namespace!r} is not a valid Kubernetes namespace name "
            "(lower-case letters, digits and '-', at most 63)"
        )
    if not 1 <= settings.tunnel_port <= 65535:
        raise UserError(f"--port {settings.tunnel_port} is not a port number (1-65535)")
    if not 1280 <= settings.tunnel_mtu <= 9000:
        raise UserError(f"--mtu {settings.tunnel_mtu} is out of range (1280-9000)")
    return settings


async def open_docker_or_fail() -> Any:
    try:
        return await docker_engine.open_docker()
    except docker_engine.DockerUnavailableError as exc:
        raise UserError(str(exc)) from exc


async def _main(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.cmd in STANDALONE:
        return await STANDALONE[args.cmd](args, settings)
    async with open_context(args.kubeconfig, args.context, settings) as ctx:
        return await COMMANDS[args.cmd](ctx, args)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    configure_logging(debug=args.debug)
    try:
        code = anyio.run(_main, args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        code = 130 if args.cmd != "up" else 0
    sys.exit(code)


if __name__ == "__main__":
    main()
