"""The build context of a product image, made from the installed package.

A context is a tar: the component's Dockerfile (shipped inside the package), ``site/``
(gefyra_async itself and its dependencies, installed by pip for the base image's Python
and platform) and, for the WireGuard ends, a static ``wireguard-go``. pip and Go run
here, on the build machine, so the base image needs nothing but python3.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import sys
import tarfile
from collections.abc import Callable, Iterable
from importlib import metadata, resources
from pathlib import Path

import anyio

Progress = Callable[[str], None]

PACKAGE = "gefyra_async"
DISTRIBUTION = "gefyra-async"
# wireguard-go from its upstream module: batching and TUN offloads (GSO/GRO), several times
# what distribution builds of 2022 carry. Same pin as tests/platform/wireguard-build/go.mod.
WIREGUARD_GO_MODULE = "golang.zx2c4.com/wireguard"
WIREGUARD_GO_VERSION = "v0.0.0-20260522210424-ecfc5a8d5446"


class ContextError(RuntimeError):
    """A build context could not be made; the message says what is missing and what to do."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gefyra-async"


def dockerfile(component: str) -> bytes:
    """The Dockerfile of COMPONENT, as shipped in the package."""
    try:
        return (resources.files(PACKAGE) / "images" / component / "Dockerfile").read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ContextError(
            f"the installed gefyra-async has no Dockerfile for {component}; reinstall the package"
        ) from exc


def requirements() -> list[str]:
    """The package's runtime dependencies, pinned to the versions installed here, so the
    images run what this client was tested with."""
    try:
        declared = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError as exc:
        raise ContextError("gefyra-async is not installed as a package; pip install it") from exc
    pinned = []
    for requirement in declared:
        if "extra ==" in requirement:
            continue
        name = requirement.split(";")[0]
        for sep in ("<", ">", "=", "!", "~", "[", " "):
            name = name.split(sep)[0]
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pinned.append(requirement.split(";")[0].strip())
    return sorted(pinned)


def _machine() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


async def dependencies(python: str, progress: Progress | None = None) -> Path:
    """A folder with the dependencies installed for CPython PYTHON (e.g. "3.11") on Linux
    of this machine's architecture; cached by requirements, version and architecture."""
    wanted = requirements()
    machine = _machine()
    key = hashlib.sha256("\n".join([python, machine, *wanted]).encode()).hexdigest()[:16]
    target = cache_dir() / "image-deps" / key
    if await anyio.Path(target).is_dir():
        return target
    if progress is not None:
        progress(f"installing the images' Python dependencies for Python {python} ({machine})")
    tmp = target.with_name(key + ".tmp")
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
    platforms = [f"manylinux{tag}_{machine}" for tag in ("2014", "_2_17", "_2_28", "_2_34")] + [
        f"linux_{machine}"
    ]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-compile", "--only-binary=:all:", "--implementation", "cp"]
    command += ["--python-version", python, "--target", str(tmp)]
    for tag in platforms:
        command += ["--platform", tag]
    result = await anyio.run_process([*command, *wanted], check=False)
    if result.returncode != 0:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise ContextError(
            f"pip could not install the images' dependencies for Python {python} ({last}); "
            "check that this machine reaches the package index, or pass --base-python"
        )
    await anyio.Path(tmp).rename(target)
    return target


def _wireguard_binary(prebuilt: str | None) -> tuple[Path, bytes | None]:
    """Where the built binary is cached, and PREBUILT's or the cached binary's bytes."""
    out = cache_dir() / f"wireguard-go-{WIREGUARD_GO_VERSION}-{_machine()}" / "wireguard-go"
    if prebuilt:
        path = Path(prebuilt).expanduser()
        if not path.is_file():
            raise ContextError(f"--wireguard-go {prebuilt}: no such file")
        return out, path.read_bytes()
    return out, out.read_bytes() if out.is_file() else None


def _go() -> str | None:
    fallback = Path("/usr/local/go/bin/go")  # Go's own tarball puts it here, off PATH
    return shutil.which("go") or (str(fallback) if fallback.is_file() else None)


async def wireguard_go(prebuilt: str | None, progress: Progress | None = None) -> bytes:
    """A static wireguard-go: PREBUILT, or built from its pinned module with local Go."""
    out, found = await anyio.to_thread.run_sync(_wireguard_binary, prebuilt)
    if found is not None:
        return found
    go = await anyio.to_thread.run_sync(_go)
    if go is None:
        raise ContextError(
            "building wireguard-go needs Go on this machine; install Go, or pass "
            "--wireguard-go PATH (a static Linux build of golang.zx2c4.com/wireguard)"
        )
    if progress is not None:
        progress(f"building wireguard-go ({WIREGUARD_GO_MODULE}@{WIREGUARD_GO_VERSION}) with {go}")
    tmp = out.parent.with_name(out.parent.name + ".tmp")
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
    await anyio.Path(tmp).mkdir(parents=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(tmp), "GOFLAGS": "-trimpath"}
    result = await anyio.run_process(
        [go, "install", "-ldflags=-s -w", f"{WIREGUARD_GO_MODULE}@{WIREGUARD_GO_VERSION}"],
        check=False,
        env=env,
    )

    def keep() -> bytes:
        (tmp / "wireguard").rename(tmp / "wireguard-go")
        shutil.rmtree(out.parent, ignore_errors=True)
        tmp.rename(out.parent)
        return out.read_bytes()

    if result.returncode != 0 or not await anyio.Path(tmp / "wireguard").is_file():
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise ContextError(f"building wireguard-go failed ({last}); pass --wireguard-go PATH")
    return await anyio.to_thread.run_sync(keep)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _package_files() -> Iterable[tuple[str, bytes]]:
    root = Path(str(resources.files(PACKAGE)))
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed"):
            yield f"{PACKAGE}/{path.relative_to(root).as_posix()}", path.read_bytes()


def context_tar(component: str, site: Path, wireguard: bytes | None) -> bytes:
    """The tar of COMPONENT's build context (deterministic: fixed mtimes, sorted)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_file(tar, "Dockerfile", dockerfile(component))
        if wireguard is not None:
            _add_file(tar, "wireguard-go", wireguard, 0o755)
        for path in sorted(site.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(site).as_posix()
                _add_file(tar, f"site/{rel}", path.read_bytes(), path.stat().st_mode & 0o755)
        for name, data in _package_files():
            _add_file(tar, f"site/{name}", data)
    return buffer.getvalue()
