"""Names and labels every gefyra-async object carries, in the cluster and in Docker."""

from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "gefyra-async"
COMPONENT = "gefyra-async.dev/component"
CONNECTION = "gefyra-async.dev/connection"
ROLE = "gefyra-async.dev/role"

CLIENT_VERSION = "v1alpha1"
CLIENT_PLURAL = "clients"
CLIENT_KIND = "Client"

STOWAWAY = "stowaway"
STOWAWAY_TUNNEL_SERVICE = "stowaway-tunnel"
STOWAWAY_KEY_SECRET = "stowaway-server-key"
STOWAWAY_LISTEN_PORT = 51820

IMAGE_PREFIX = "registry.local/gefyra-async"


def labels(component: str, **extra: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGED_BY_VALUE, COMPONENT: component, **extra}
