"""Typed access to the Kubernetes objects gefyra-async reads and writes.

Callers get plain dicts and strings; kubernetes_asyncio stays inside adapters.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
from collections.abc import Sequence
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient, ApiException

from gefyra_async.adapters.kube_apply import KubeRequestError
from gefyra_async.core import names
from gefyra_async.core.settings import Settings

MERGE_PATCH = "application/merge-patch+json"


STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class CustomObjects:
    """The custom resources of one kind (PLURAL) in stowaway's namespace."""

    plural = names.CLIENT_PLURAL

    def __init__(self, api: ApiClient, settings: Settings, plural: str | None = None) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.settings = settings
        if plural:
            self.plural = plural

    def _args(self) -> tuple[str, str, str, str]:
        return (
            self.settings.api_group,
            names.CLIENT_VERSION,
            self.settings.namespace,
            self.plural,
        )

    async def list(self) -> list[dict[str, Any]]:
        """Every object; none when the custom resource is not installed."""
        try:
            result = await self.custom.list_namespaced_custom_object(*self._args())
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
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

    async def set_finalizers(self, name: str, finalizers: Sequence[str]) -> None:
        """Replace the object's finalizers (a deleted object goes once they are empty)."""
        try:
            options: dict[str, Any] = {"_content_type": MERGE_PATCH}
            await self.custom.patch_namespaced_custom_object(
                *self._args(), name, {"metadata": {"finalizers": list(finalizers)}}, **options
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = await self.custom.create_namespaced_custom_object(
                *self._args(), body
            )
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadyExistsError(f"{self.plural} {body['metadata']['name']!r}") from None
            raise
        return obj

    async def delete(self, name: str) -> bool:
        try:
            await self.custom.delete_namespaced_custom_object(*self._args(), name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


class AlreadyExistsError(RuntimeError):
    pass


class Clients(CustomObjects):
    """The Client custom resources in stowaway's namespace."""

    plural = names.CLIENT_PLURAL


class Bridges(CustomObjects):
    """The Bridge custom resources in stowaway's namespace."""

    plural = names.BRIDGE_PLURAL


async def workload(api: ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """A Deployment, StatefulSet or Pod as a plain (camelCase) dict; None if missing."""
    obj: Any
    try:
        if kind == "Pod":
            obj = await client.CoreV1Api(api).read_namespaced_pod(name, namespace)
        elif kind == "Deployment":
            obj = await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
        elif kind == "StatefulSet":
            obj = await client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)
        else:
            raise ValueError(f"not a workload kind: {kind}")
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    data: dict[str, Any] = api.sanitize_for_serialization(obj)
    return data


RESTORED_AT = "gefyra-async.dev/restored-at"


async def roll_out(api: ApiClient, namespace: str, kind: str, name: str, at: str) -> bool:
    """Replace the pods of a Deployment or StatefulSet as `kubectl rollout restart` does
    (an annotation of the pod template changes); False if the workload is gone."""
    body = {"spec": {"template": {"metadata": {"annotations": {RESTORED_AT: at}}}}}
    apps = client.AppsV1Api(api)
    try:
        if kind == "Deployment":
            await apps.patch_namespaced_deployment(name, namespace, body)
        elif kind == "StatefulSet":
            await apps.patch_namespaced_stateful_set(name, namespace, body)
        else:
            raise ValueError(f"only a Deployment or a StatefulSet rolls out, not a {kind}")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def add_ephemeral_container(
    api: ApiClient, namespace: str, pod: str, container: dict[str, Any]
) -> None:
    """Add CONTAINER to POD's ephemeral containers (the pod keeps running)."""
    options: dict[str, Any] = {"_content_type": STRATEGIC_MERGE_PATCH}
    await client.CoreV1Api(api).patch_namespaced_pod_ephemeralcontainers(
        pod, namespace, {"spec": {"ephemeralContainers": [container]}}, **options
    )


async def record_event(
    api: ApiClient,
    involved: dict[str, str],
    reason: str,
    message: str,
    *,
    warning: bool = False,
    component: str = "gefyra-async-stowaway",
) -> None:
    """A Kubernetes Event about INVOLVED (apiVersion, kind, namespace, name, uid).

    Events are a courtesy to the user: failing to write one is logged, never raised.
    """
    import datetime
    import uuid

    now = datetime.datetime.now(datetime.UTC)
    body: Any = {
        "metadata": {
            "name": f"{involved['name']}.{uuid.uuid4().hex[:12]}",
            "namespace": involved["namespace"],
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1000],
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
    with contextlib.suppress(ApiException):
        await client.CoreV1Api(api).create_namespaced_event(involved["namespace"], body)


async def service_cluster_ip(api: ApiClient, namespace: str, name: str) -> str | None:
    try:
        service = await client.CoreV1Api(api).read_namespaced_service(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    ip = service.spec.cluster_ip
    return str(ip) if ip and ip != "None" else None


def pods_everywhere(api: ApiClient) -> Any:
    """The list call of every pod in the cluster (for ``list_and_watch``)."""
    return client.CoreV1Api(api).list_pod_for_all_namespaces


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


async def deployment_available(api: ApiClient, namespace: str, name: str) -> bool:
    try:
        deployment = await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    status = deployment.status
    return bool(
        status.available_replicas
        and status.updated_replicas == deployment.spec.replicas
        and (status.observed_generation or 0) >= deployment.metadata.generation
    )


async def crd_established(api: ApiClient, name: str) -> bool:
    try:
        crd = await client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


async def namespace_exists(api: ApiClient, name: str) -> bool:
    try:
        await client.CoreV1Api(api).read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


class WorkloadError(RuntimeError):
    """A workload named by the user does not exist or has no ready pod."""


WORKLOAD_KINDS = {
    "deploy": "deployment",
    "deployment": "deployment",
    "deployments": "deployment",
    "sts": "statefulset",
    "statefulset": "statefulset",
    "statefulsets": "statefulset",
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
}


async def ready_pod_of(api: ApiClient, namespace: str, kind: str, name: str) -> Any:
    """A Ready pod of the workload KIND/NAME (deployment, statefulset or pod)."""
    core = client.CoreV1Api(api)
    if not await namespace_exists(api, namespace):
        raise WorkloadError(f"namespace {namespace!r} does not exist")
    normal = WORKLOAD_KINDS.get(kind.lower())
    if normal is None:
        raise WorkloadError(f"{kind!r} is not a workload kind; use deployment, statefulset or pod")
    try:
        if normal == "pod":
            pods = [await core.read_namespaced_pod(name, namespace)]
        else:
            apps = client.AppsV1Api(api)
            read = (
                apps.read_namespaced_deployment
                if normal == "deployment"
                else apps.read_namespaced_stateful_set
            )
            workload = await read(name, namespace)
            selector = ",".join(f"{k}={v}" for k, v in workload.spec.selector.match_labels.items())
            pods = (await core.list_namespaced_pod(namespace, label_selector=selector)).items
    except ApiException as exc:
        if exc.status == 404:
            raise WorkloadError(
                f"{normal} {name!r} does not exist in namespace {namespace!r}"
            ) from None
        raise
    for pod in pods:
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if conditions.get("Ready") == "True" and not pod.metadata.deletion_timestamp:
            return pod
    raise WorkloadError(f"{normal} {name!r} in namespace {namespace!r} has no ready pod")


async def exec_in_pod(
    api: ApiClient, namespace: str, pod: str, container: str, command: list[str]
) -> str:
    """Run COMMAND in a pod's container through the exec API; return its output."""
    from kubernetes_asyncio.stream import WsApiClient

    async with WsApiClient(configuration=api.configuration) as ws:
        # The generated signature says str; the websocket client takes the argv list.
        argv: Any = command
        output = await client.CoreV1Api(ws).connect_get_namespaced_pod_exec(
            pod,
            namespace,
            command=argv,
            container=container,
            stderr=False,
            stdin=False,
            stdout=True,
            tty=False,
        )
    return str(output)


async def objects_with_label(api: ApiClient, label: str) -> list[str]:
    """``kind/namespace/name`` of every object of the kinds gefyra-async creates that
    carries LABEL, in any namespace: what ``down`` must have removed."""
    core, apps, rbac = (
        client.CoreV1Api(api),
        client.AppsV1Api(api),
        client.RbacAuthorizationV1Api(api),
    )
    ext = client.ApiextensionsV1Api(api)
    found: list[str] = []
    listings: list[tuple[str, Any]] = [
        ("Namespace", core.list_namespace),
        ("Pod", core.list_pod_for_all_namespaces),
        ("Service", core.list_service_for_all_namespaces),
        ("ServiceAccount", core.list_service_account_for_all_namespaces),
        ("Secret", core.list_secret_for_all_namespaces),
        ("Deployment", apps.list_deployment_for_all_namespaces),
        ("Role", rbac.list_role_for_all_namespaces),
        ("RoleBinding", rbac.list_role_binding_for_all_namespaces),
        ("ClusterRole", rbac.list_cluster_role),
        ("ClusterRoleBinding", rbac.list_cluster_role_binding),
        ("CustomResourceDefinition", ext.list_custom_resource_definition),
    ]
    for kind, lister in listings:
        result = await lister(label_selector=label)
        for item in result.items:
            found.append(f"{kind}/{item.metadata.namespace or '-'}/{item.metadata.name}")
    return found


async def load_balancer_address(api: ApiClient, namespace: str, name: str) -> str | None:
    """The first ingress address of a LoadBalancer Service, once it has one."""
    service = await client.CoreV1Api(api).read_namespaced_service(name, namespace)
    for ingress in (service.status.load_balancer.ingress or []) if service.status else []:
        if ingress.ip or ingress.hostname:
            return str(ingress.ip or ingress.hostname)
    return None


async def deployment_labels(api: ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    """The labels of Deployment NAME; None when it does not exist. A refusal (403: the
    kubeconfig may not read it) is a KubeRequestError with the status."""
    try:
        deployment = await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise KubeRequestError(
            exc.status or 0, f"reading Deployment {namespace}/{name}: {exc.reason}"
        ) from exc
    return dict(deployment.metadata.labels or {})


class NodesForbiddenError(RuntimeError):
    """The kubeconfig may not list nodes."""


async def ready_node_address(api: ApiClient) -> str | None:
    """The address a client outside the cluster most likely reaches a Ready node at: the
    first Ready node's ExternalIP, else the first Ready node's InternalIP."""
    try:
        nodes = (await client.CoreV1Api(api).list_node()).items
    except ApiException as exc:
        if exc.status == 403:
            raise NodesForbiddenError(str(exc.reason)) from exc
        raise
    ready = [
        n
        for n in sorted(nodes, key=lambda n: n.metadata.name)
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        and not n.spec.unschedulable
    ] or [
        n
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    for kind in ("ExternalIP", "InternalIP"):
        for node in ready:
            for address in node.status.addresses or []:
                if address.type == kind and address.address:
                    return str(address.address)
    return None


async def service_node_port(api: ApiClient, namespace: str, name: str, port: str) -> int | None:
    """The node port Kubernetes gave the Service port named PORT; None if none (yet)."""
    try:
        service = await client.CoreV1Api(api).read_namespaced_service(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise KubeRequestError(exc.status or 0, f"reading Service {namespace}/{name}") from exc
    for entry in service.spec.ports or []:
        if entry.name == port and entry.node_port:
            return int(entry.node_port)
    return None


async def ready_pod_with_labels(
    api: ApiClient, namespace: str, labels: dict[str, str]
) -> str | None:
    """The name of a Ready, not terminating pod with LABELS in NAMESPACE."""
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    try:
        pods = (
            await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector)
        ).items
    except ApiException as exc:
        raise KubeRequestError(
            exc.status or 0, f"listing pods in {namespace}: {exc.reason}"
        ) from exc
    for pod in pods:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and not pod.metadata.deletion_timestamp:
            return str(pod.metadata.name)
    return None
