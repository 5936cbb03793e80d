"""Server-side apply and delete of plain-dict Kubernetes objects.

One PATCH with ``application/apply-patch+yaml`` creates or updates an object, so the
installer is idempotent and a second ``up`` changes only what differs. Paths are built
from apiVersion and kind for the kinds gefyra-async manages.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio.client import ApiClient, ApiException

FIELD_MANAGER = "gefyra-async"


class KubeRequestError(RuntimeError):
    """The API server refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# kind → (plural, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "ServiceAccount": ("serviceaccounts", True),
    "Secret": ("secrets", True),
    "Service": ("services", True),
    "Pod": ("pods", True),
    "Deployment": ("deployments", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
}


def object_path(obj: dict[str, Any], *, named: bool = True) -> str:
    api_version: str = obj["apiVersion"]
    kind: str = obj["kind"]
    if kind not in KINDS:
        raise ValueError(f"gefyra-async does not manage objects of kind {kind}")
    plural, namespaced = KINDS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    meta = obj["metadata"]
    path = base
    if namespaced:
        path += f"/namespaces/{meta['namespace']}"
    path += f"/{plural}"
    return f"{path}/{meta['name']}" if named else path


async def _call(
    api: ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> Any:
    try:
        response = await api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            response_types_map={},
            _return_http_data_only=True,
            _preload_content=False,
        )
    except ApiException as exc:
        raise KubeRequestError(exc.status or 0, f"{method} {path}: {exc.reason}") from exc
    data = await response.read()
    result = json.loads(data) if data else None
    if response.status >= 400:
        message = result.get("message", "") if isinstance(result, dict) else str(result)
        raise KubeRequestError(response.status, f"{method} {path}: {message}")
    return result


async def apply(api: ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Create or update OBJ (server-side apply, owned by gefyra-async)."""
    result: dict[str, Any] = await _call(
        api,
        "PATCH",
        object_path(obj),
        body=obj,
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        content_type="application/apply-patch+yaml",
    )
    return result


async def get(api: ApiClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = await _call(api, "GET", object_path(obj))
    except KubeRequestError as exc:
        if exc.status == 404:
            return None
        raise
    return result


async def delete(api: ApiClient, obj: dict[str, Any]) -> bool:
    """Delete OBJ (foreground, so dependents go first); False when it was not there."""
    try:
        await _call(
            api,
            "DELETE",
            object_path(obj),
            body={"propagationPolicy": "Foreground"},
        )
    except KubeRequestError as exc:
        if exc.status == 404:
            return False
        raise
    return True
