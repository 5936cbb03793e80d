"""Typed access to the Kubernetes objects gefyra-async reads and writes.

Callers get plain dicts and strings; kubernetes_asyncio stays inside adapters.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient, ApiException

from gefyra_async.core import names
from gefyra_async.core.settings import Settings

MERGE_PATCH = "application/merge-patch+json"


class Clients:
    """The Client custom resources in stowaway's namespace."""

    def __init__(self, api: ApiClient, settings: Settings) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.settings = settings

    def _args(self) -> tuple[str, str, str, str]:
        return (
            self.settings.api_group,
            names.CLIENT_VERSION,
            self.settings.namespace,
            names.CLIENT_PLURAL,
        )

    async def list(self) -> list[dict[str, Any]]:
        result = await self.custom.list_namespaced_custom_object(*self._args())
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                *self._args(), name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def patch_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            # Custom resources take no strategic merge; without an explicit type the
            # client would label a dict as a JSON patch.
            options: dict[str, Any] = {"_content_type": MERGE_PATCH}
            await self.custom.patch_namespaced_custom_object_status(
                *self._args(), name, {"status": status}, **options
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self.custom.create_namespaced_custom_object(*self._args(), body)
        return obj

    async def delete(self, name: str) -> bool:
        try:
            await self.custom.delete_namespaced_custom_object(*self._args(), name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


async def ensure_secret_value(
    api: ApiClient, namespace: str, name: str, key: str, make: Any
) -> str:
    """The value under KEY of Secret NAME; created with ``make()`` when the Secret is missing."""
    core = client.CoreV1Api(api)
    try:
        secret = await core.read_namespaced_secret(name, namespace)
        return base64.b64decode(secret.data[key]).decode()
    except ApiException as exc:
        if exc.status != 404:
            raise
    value: str = make()
    body: Any = {
        "metadata": {"name": name, "labels": names.labels(names.STOWAWAY)},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }
    try:
        await core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        # Someone else created it first: use theirs.
        secret = await core.read_namespaced_secret(name, namespace)
        return base64.b64decode(secret.data[key]).decode()
    return value


async def cluster_ranges(api: ApiClient, pod_ip: str | None) -> list[str]:
    """The pod and service ranges of the cluster, for clients to route into the tunnel.

    Pods: every node's ``spec.podCIDRs`` (falling back to the /16 around stowaway's own
    pod IP when nodes carry none). Services: the ServiceCIDR objects (GA since 1.33).
    """
    ranges: list[str] = []
    nodes = await client.CoreV1Api(api).list_node()
    for node in nodes.items:
        for cidr in node.spec.pod_cidrs or ([node.spec.pod_cidr] if node.spec.pod_cidr else []):
            if cidr not in ranges:
                ranges.append(cidr)
    if not ranges and pod_ip:
        ranges.append(str(ipaddress.ip_network(f"{pod_ip}/16", strict=False)))
    try:
        cidrs = await client.NetworkingV1Api(api).list_service_cidr()
    except ApiException as exc:
        if exc.status != 404:
            raise
    else:
        for item in cidrs.items:
            for cidr in item.spec.cidrs or []:
                if cidr not in ranges and ":" not in cidr:
                    ranges.append(cidr)
    return ranges


async def incluster_api() -> ApiClient:
    """An API client with the pod's service account (inside the cluster)."""
    from kubernetes_asyncio import config

    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return ApiClient(configuration)
