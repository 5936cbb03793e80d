"""Fixtures for tests against the real local platform (see tests/platform/).

The platform must be running (`bash tests/platform/platform.sh up`, as root; `tests/run.sh`
starts it). When it is not, every e2e test fails with that instruction; none is skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiodocker
import pytest
from kubernetes_asyncio import client, config

from gefyra_async.api import open_context
from gefyra_async.api.context import Context
from tests.e2e.platform import ImageLoader, Platform, PlatformError, poll, unique_name

TEST_LABEL = "gefyra-async.dev/e2e-test"
MEASURED: list[str] = []  # numbers the tests measured, printed at the end of the run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("measured by the e2e tests (one run, a shared machine)")
        for line in MEASURED:
            terminalreporter.write_line(line)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """report(text): a measured number, listed in the run's summary under the test's name."""
    return lambda text: MEASURED.append(f"{request.node.name}: {text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.anyio)


@pytest.fixture(scope="session")
def platform() -> Platform:
    """The running platform. The product is pointed at the platform's registry the way a
    user points it at theirs: GEFYRA_ASYNC_REGISTRY (for the API in this process and for
    every CLI it starts)."""
    try:
        found = Platform.discover()
    except PlatformError as exc:
        pytest.fail(str(exc), pytrace=False)
    os.environ["GEFYRA_ASYNC_REGISTRY"] = found.registry
    return found


@pytest.fixture
async def ctx(platform: Platform) -> AsyncIterator[Context]:
    """The product's API context, pointed at the platform's cluster and Docker engine."""
    async with open_context(str(platform.kubeconfig)) as context:
        yield context


@pytest.fixture(scope="session")
def kubeconfig(platform: Platform) -> str:
    return str(platform.kubeconfig)


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def core(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as docker:
        yield docker


@pytest.fixture(scope="session")
def image_loader(platform: Platform) -> ImageLoader:
    return ImageLoader(platform)


async def create_namespace(core: client.CoreV1Api, name: str) -> None:
    """Namespace NAME, labelled as a test's, once it takes pods (its default account exists)."""
    body: Any = {"metadata": {"name": name, "labels": {TEST_LABEL: "true"}}}
    await core.create_namespace(body)

    async def has_default_account() -> bool | None:
        accounts = await core.list_namespaced_service_account(
            name, field_selector="metadata.name=default"
        )
        return True if accounts.items else None

    await poll(has_default_account, within=60, what=f"service account {name}/default exists")


@pytest.fixture
async def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted (and waited for) afterwards."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = unique_name(f"t-{slug}")
    await create_namespace(core, name)
    try:
        yield name
    finally:
        await core.delete_namespace(name, grace_period_seconds=0)

        async def gone() -> bool | None:
            try:
                await core.read_namespace(name)
            except client.ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return None

        await poll(gone, within=120, what=f"namespace {name} deleted")


@pytest.fixture(scope="session")
def platform_cli(platform: Platform) -> list[str]:
    """The gefyra-async command line, pointed at the platform's cluster."""
    import sys

    return [sys.executable, "-m", "gefyra_async.cli", "--kubeconfig", str(platform.kubeconfig)]


@pytest.fixture(scope="session", autouse=True)
def clean_product_state(platform: Platform, platform_cli: list[str]) -> None:
    """Start the e2e tests from a platform without gefyra-async on it.

    The README's demo leaves its connection up on purpose (for the user to play with); the
    tests check that each of them leaves nothing behind, so they first take down whatever an
    earlier demo or an interrupted run left on this project's own test platform.
    """
    import subprocess
    import sys

    done = subprocess.run(
        [*platform_cli, "down", "--all"], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"could not take down earlier connections: {done.stderr}", pytrace=False)
    if "no connections" not in done.stdout + done.stderr:
        print(f"\ntook down what an earlier run left: {done.stdout.strip()}", file=sys.stderr)
