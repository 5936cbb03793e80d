"""Image names from the registry setting, the cluster side they go into, and the
pieces of `images build` and the platform that need no Docker."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from gefyra_async.adapters import image_context
from gefyra_async.core import images, manifests, names
from gefyra_async.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("localhost:5000/gefyra-async", "localhost:5000/gefyra-async/cargo:1.2.0"),
        ("ghcr.io/team/", "ghcr.io/team/cargo:1.2.0"),
        ("registry.example.com:5000/a/b-c", "registry.example.com:5000/a/b-c/cargo:1.2.0"),
    ],
)
def test_image_refs_come_from_the_registry_and_the_version(registry: str, expected: str) -> None:
    assert images.image_ref(registry, "cargo", "1.2.0") == expected


@pytest.mark.parametrize(
    "registry",
    [
        "",
        "https://ghcr.io/x",
        "ghcr.io/Team",
        "a//b",
        "-x.io/a",
        "x.io/a\nb",
        "x.io/a b",
        "x" * 201,
    ],
)
def test_a_bad_registry_is_refused_with_a_reason(registry: str) -> None:
    with pytest.raises(images.ImageNameError, match="registry"):
        images.check_registry(registry)


def test_a_local_version_part_becomes_a_valid_tag() -> None:
    assert images.tag_of("0.1.0.dev0+g1234") == "0.1.0.dev0-g1234"
    with pytest.raises(images.ImageNameError):
        images.tag_of("1.0/../x")


def test_the_cluster_side_names_its_images_and_version_from_the_settings() -> None:
    s = dataclasses.replace(Settings(), registry="registry.example.com/team")
    objects = {o["kind"]: o for o in manifests.cluster_side(s, "2.0.1")}
    deployment = objects["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/team/stowaway:2.0.1"
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GEFYRA_ASYNC_CARRIER_IMAGE"] == "registry.example.com/team/carrier:2.0.1"
    assert deployment["metadata"]["labels"][names.VERSION] == "2.0.1"


def test_install_options_reach_the_objects() -> None:
    s = dataclasses.replace(Settings(), namespace="dev-tools", tunnel_port=32000, tunnel_mtu=1280)
    objects = manifests.cluster_side(s, "1.0", service_annotations={"example.com/internal": "true"})
    namespaced = [o for o in objects if o["kind"] not in manifests.CLUSTER_SCOPED]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"dev-tools"}
    tunnel = next(o for o in objects if o["metadata"]["name"] == names.STOWAWAY_TUNNEL_SERVICE)
    assert tunnel["spec"]["ports"][0]["nodePort"] == 32000
    assert tunnel["metadata"]["annotations"] == {"example.com/internal": "true"}
    # Cluster-scoped names carry the namespace: two installs do not collide.
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"]["name"] for o in roles} == {"dev-tools-stowaway"}
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GEFYRA_ASYNC_TUNNEL_MTU"] == "1280"


def test_every_dockerfile_ships_in_the_package_and_the_top_level_folders_show_it() -> None:
    for component in images.COMPONENTS:
        text = image_context.dockerfile(component).decode()
        assert f'"-m", "gefyra_async.{component}"' in text
        assert ("wireguard-go" in text.split("COPY", 1)[1]) == (component != "carrier")
        top = REPO / component / "Dockerfile"
        assert top.resolve() == (REPO / "gefyra_async" / "images" / component / "Dockerfile")


def test_the_build_context_holds_the_package_its_dockerfile_and_wireguard(
    tmp_path: Path,
) -> None:
    (tmp_path / "dep").mkdir()
    (tmp_path / "dep" / "__init__.py").write_text("x = 1\n")
    data = image_context.context_tar("cargo", tmp_path, b"\x7fELF")
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        names_in = set(tar.getnames())
        assert tar.getmember("wireguard-go").mode == 0o755
    assert {"Dockerfile", "wireguard-go", "site/dep/__init__.py"} <= names_in
    assert "site/gefyra_async/cargo/agent.py" in names_in
    assert not any("__pycache__" in n for n in names_in)
    # Deterministic: the same inputs give the same bytes (Docker's build cache keys on them).
    assert image_context.context_tar("cargo", tmp_path, b"\x7fELF") == data
    carrier = image_context.context_tar("carrier", tmp_path, None)
    with tarfile.open(fileobj=BytesIO(carrier)) as tar:
        assert "wireguard-go" not in tar.getnames()


def test_the_images_pin_the_same_wireguard_go_as_the_platform() -> None:
    go_mod = (REPO / "tests" / "platform" / "wireguard-build" / "go.mod").read_text()
    pinned = re.search(r"golang\.zx2c4\.com/wireguard (\S+)", go_mod)
    assert pinned is not None
    assert pinned.group(1) == image_context.WIREGUARD_GO_VERSION


def test_requirements_are_the_package_dependencies_pinned_to_what_is_installed() -> None:
    found = image_context.requirements()
    assert any(r.startswith("anyio==") for r in found)
    assert not any(r.startswith(("pytest", "ruff", "mypy")) for r in found)  # dev extras


def _apt_mirror() -> object:
    spec = importlib.util.spec_from_file_location(
        "apt_mirror", REPO / "tests" / "platform" / "tools" / "apt_mirror.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_platform_takes_its_debian_mirror_from_the_apt_sources() -> None:
    m = _apt_mirror()
    one_line = (
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
    )
    assert list(m._one_line(one_line)) == [  # type: ignore[attr-defined]
        ("http://mirror.example/debian", ["bookworm"], ["main", "contrib"])
    ]
    deb822 = (
        "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb-src\nURIs: http://src.example/\nSuites: bookworm\n"
        "Components: main\n\nTypes: deb\nEnabled: no\nURIs: http://off.example/\n"
        "Suites: bookworm\nComponents: main\n"
    )
    assert list(m._deb822(deb822)) == [  # type: ignore[attr-defined]
        ("http://a.example/debian", ["bookworm", "bookworm-updates"], ["main"])
    ]


def test_the_wheel_ships_the_dockerfiles_and_images_build_finds_them(tmp_path: Path) -> None:
    """What a user gets from `pip install gefyra-async`: the Dockerfiles are inside the
    package, and the installed code reads them from there (no checkout needed)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "wheel"), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = (tmp_path / "wheel").glob("gefyra_async-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    code = (
        "import gefyra_async, sys\n"
        "from gefyra_async.adapters import image_context\n"
        "assert gefyra_async.__file__.startswith(sys.argv[1]), gefyra_async.__file__\n"
        "for c in ('cargo', 'stowaway', 'carrier'):\n"
        "    print(c, len(image_context.dockerfile(c)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sizes = dict(line.split() for line in done.stdout.splitlines())
    assert set(sizes) == {"cargo", "stowaway", "carrier"}
    assert all(int(n) > 200 for n in sizes.values()), sizes
