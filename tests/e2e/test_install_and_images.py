"""Install for admins, images from a registry, version skew — on the real platform.

The platform runs a real registry (Debian's docker-registry on loopback); the product
images are pushed there by `gefyra-async images build --push`, and both Docker and the
cluster's containerd pull them from it, as they would from a team's registry.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiodocker
import anyio
import yaml
from kubernetes_asyncio import client

from gefyra_async import __version__
from gefyra_async.core import names
from tests.e2e.platform import PLATFORM_SH, Platform, poll, unique_name

GA = [sys.executable, "-m", "gefyra_async.cli"]
# Kinds whose objects come and go by themselves on a live cluster.
VOLATILE = ("events", "leases", "endpoints", "endpointslices", "tokenreviews")


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    with anyio.fail_after(400):
        done = await anyio.run_process([*GA, *args], check=False, env=env)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def snapshot(platform: Platform) -> set[str]:
    """Every object of the cluster (but the volatile kinds), as kind/namespace/name."""
    kubectl = [str(platform.kubectl), f"--kubeconfig={platform.kubeconfig}"]
    kinds = (
        await anyio.run_process([*kubectl, "api-resources", "--verbs=list", "-o", "name"])
    ).stdout.decode()
    wanted = [k for k in kinds.split() if k.split(".")[0] not in VOLATILE]
    out = await anyio.run_process(
        [
            *kubectl,
            "get",
            ",".join(wanted),
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{'\\n'}{end}",
        ]
    )
    found = set(out.stdout.decode().split())
    # The test's own pods and namespaces are not what install/uninstall changed.
    return {f for f in found if "/t-" not in f and not f.startswith("Namespace//t-")}


async def test_install_prints_applies_and_uninstall_leaves_nothing(platform: Platform) -> None:
    before = await snapshot(platform)
    ns = unique_name("ga-admin")

    # Printed: every object, nothing created.
    code, out, err = await cli(
        "install", "--namespace", ns, "--registry", platform.registry, "--port", "31821"
    )
    assert code == 0, err
    printed = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in printed)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "Service",
            "Service",
            "Deployment",
        ]
    )
    deployment = next(d for d in printed if d["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{platform.registry}/stowaway:{__version__}"
    assert await snapshot(platform) == before

    # Applied, with the admin's options.
    code, out, err = await cli(
        "--kubeconfig",
        str(platform.kubeconfig),
        "install",
        "--apply",
        "--namespace",
        ns,
        "--registry",
        platform.registry,
        "--port",
        "31821",
        "--service-annotation",
        "example.com/internal=true",
    )
    assert code == 0, err
    assert f"stowaway is available in namespace {ns}" in out
    tunnel = json.loads(
        (
            await anyio.run_process(
                [
                    str(platform.kubectl),
                    f"--kubeconfig={platform.kubeconfig}",
                    "-n",
                    ns,
                    "get",
                    "service",
                    names.STOWAWAY_TUNNEL_SERVICE,
                    "-o",
                    "json",
                ]
            )
        ).stdout
    )
    assert tunnel["spec"]["ports"][0]["nodePort"] == 31821
    assert tunnel["metadata"]["annotations"]["example.com/internal"] == "true"
    assert await snapshot(platform) != before

    # Removed, and listed.
    code, out, err = await cli(
        "--kubeconfig", str(platform.kubeconfig), "uninstall", "--namespace", ns, "-o", "json"
    )
    assert code == 0, err
    removed = set(json.loads(out)["removed"])
    assert {f"Namespace/{ns}", "Deployment/stowaway", f"ClusterRole/{ns}-stowaway"} <= removed
    assert f"CustomResourceDefinition/{names.CLIENT_PLURAL}.gefyra-async.dev" in removed
    assert await snapshot(platform) == before
    code, out, err = await cli(
        "--kubeconfig", str(platform.kubeconfig), "uninstall", "--namespace", ns
    )
    assert (code, out.strip()) == (0, f"nothing to remove: no cluster side in namespace {ns}")


async def test_install_without_the_rights_is_one_sentence_naming_install(
    platform: Platform, core: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    """A developer's kubeconfig (a ServiceAccount with no rights) cannot install the
    cluster side: `up` and `install --apply` say so and what to do, and leave nothing."""
    account: Any = {"metadata": {"name": "developer"}}
    await core.create_namespaced_service_account(namespace, account)
    request: Any = {"spec": {"expirationSeconds": 600}}
    token = (
        await core.create_namespaced_service_account_token("developer", namespace, request)
    ).status.token
    admin = yaml.safe_load(platform.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    kubeconfig = tmp_path / "developer.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "developer", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "developer",
                        "context": {"cluster": cluster["name"], "user": "developer"},
                    }
                ],
                "current-context": "developer",
            }
        )
    )
    before = await snapshot(platform)
    for command in (["install", "--apply"], ["up", "--detach", "--name", "dev"]):
        code, out, err = await cli("--kubeconfig", str(kubeconfig), *command)
        assert code == 1, (command, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: your kubeconfig may not "), err
        assert "403" in lines[0], err
        assert "gefyra-async install --apply" in lines[0], err
    assert await snapshot(platform) == before


def registry_tags(platform: Platform, repository: str) -> list[str]:
    host = platform.registry.split("/", 1)[0].replace("localhost", "127.0.0.1")
    with urllib.request.urlopen(f"http://{host}/v2/{repository}/tags/list", timeout=10) as r:
        tags: list[str] = json.loads(r.read())["tags"] or []
    return tags


async def test_images_built_pushed_and_pulled_by_docker_and_the_cluster(
    platform: Platform,
    core: client.CoreV1Api,
    docker: aiodocker.Docker,
    report: Any,
) -> None:
    # A registry path of this test's own: every image must come through the registry.
    registry = f"{platform.registry}/{unique_name('e2e')}"
    path = registry.split("/", 1)[1]
    tag = __version__.replace("+", "-")
    refs = {c: f"{registry}/{c}:{tag}" for c in ("cargo", "stowaway", "carrier")}
    kubeconfig = str(platform.kubeconfig)
    try:
        started = anyio.current_time()
        code, out, err = await cli(
            "images",
            "build",
            "--push",
            "--registry",
            registry,
            "--base",
            platform.base_image,
            "--wireguard-go",
            platform.wireguard_go,
        )
        assert code == 0, err
        report(f"images build --push of 3 images: {anyio.current_time() - started:.1f}s")
        assert "Step 1/" in err  # progress, step by step
        for component, ref in refs.items():
            assert ref in out
            assert registry_tags(platform, f"{path}/{component}") == [tag]
            await docker.images.delete(ref)  # Docker must pull it back

        # The cluster side and cargo from that registry: `up` pulls cargo into Docker,
        # the kubelet pulls stowaway.
        code, out, err = await cli(
            "--kubeconfig", kubeconfig, "up", "--detach", "--name", "img", "--registry", registry
        )
        assert code == 0, err
        assert f"pulling {refs['cargo']}" in err
        pulled = await docker.images.inspect(refs["cargo"])
        assert any(d.startswith(f"{registry}/cargo@sha256:") for d in pulled["RepoDigests"])
        pods = await core.list_namespaced_pod(
            "gefyra-async", label_selector=f"{names.COMPONENT}={names.STOWAWAY}"
        )
        [stowaway] = pods.items
        events = await core.list_namespaced_event(
            "gefyra-async", field_selector=f"involvedObject.name={stowaway.metadata.name}"
        )
        pulls = [e.message for e in events.items if e.reason == "Pulled"]
        assert any(f'Successfully pulled image "{refs["stowaway"]}"' in m for m in pulls), pulls
        env = {e.name: e.value for e in stowaway.spec.containers[0].env}
        assert env["GEFYRA_ASYNC_CARRIER_IMAGE"] == refs["carrier"]

        # run: an image no registry has; and --pull never of a missing image.
        missing = f"{registry}/nothing-here:1"
        code, out, err = await cli(
            "--kubeconfig", kubeconfig, "run", "--connection", "img", "--image", missing,
            "--name", unique_name("nope"), "--detach",
        )  # fmt: skip
        assert code == 1
        # Progress lines ("pulling ...") come first; then one error sentence, the last line.
        *progress, line = err.strip().splitlines()
        assert not [p for p in progress if p.startswith("error")], err
        assert line.startswith(
            f"error: the image {missing} is not in the registry localhost:5000 ("
        ), err
        assert line.endswith(
            "; push it there (`gefyra-async images build --push --registry ...`) or choose "
            "another registry with --registry"
        ), err
        code, out, err = await cli(
            "--kubeconfig", kubeconfig, "run", "--connection", "img", "--image", missing,
            "--name", unique_name("nope"), "--detach", "--pull", "never",
        )  # fmt: skip
        assert code == 1
        assert "--pull never forbids pulling it" in err
    finally:
        await cli("--kubeconfig", kubeconfig, "down", "--name", "img")
        for ref in refs.values():
            await anyio.run_process(["bash", str(PLATFORM_SH), "remove-image", ref], check=False)


async def test_a_cluster_side_of_another_version_is_named_and_upgraded_in_place(
    platform: Platform,
) -> None:
    kc = ["--kubeconfig", str(platform.kubeconfig)]
    kubectl = [str(platform.kubectl), f"--kubeconfig={platform.kubeconfig}"]
    code, _out, err = await cli(*kc, "up", "--detach", "--name", "skew-a")
    assert code == 0, err
    try:
        # The cluster side as an older release left it.
        await anyio.run_process(
            [*kubectl, "-n", "gefyra-async", "label", "deployment", "stowaway",
             f"{names.VERSION}=0.0.1", "--overwrite"]
        )  # fmt: skip
        code, _out, err = await cli(*kc, "up", "--detach", "--name", "skew-b")
        assert code == 1
        assert err.strip() == (
            "error: the cluster side in namespace gefyra-async is gefyra-async 0.0.1, this "
            f"client is {__version__}; replace it in place with `gefyra-async up --upgrade` "
            "(or an admin's `gefyra-async install --apply`): other connections reconnect by "
            "themselves"
        )
        code, _out, err = await cli(*kc, "up", "--detach", "--name", "skew-b", "--upgrade")
        assert code == 0, err
        label = await anyio.run_process(
            [*kubectl, "-n", "gefyra-async", "get", "deployment", "stowaway", "-o",
             "jsonpath={.metadata.labels.app\\.kubernetes\\.io/version}"]
        )  # fmt: skip
        assert label.stdout.decode() == __version__

        async def both_connected() -> bool | None:
            code, out, _ = await cli(*kc, "status", "-o", "json")
            rows = {r["name"]: r["connected"] for r in json.loads(out)} if code == 0 else {}
            return True if rows.get("skew-a") and rows.get("skew-b") else None

        await poll(both_connected, within=60, what="both connections connected after the upgrade")
    finally:
        await cli(*kc, "down", "--name", "skew-b")
        await cli(*kc, "down", "--name", "skew-a")
