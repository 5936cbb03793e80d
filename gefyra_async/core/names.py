"""Names and labels every gefyra-async object carries, in the cluster and in Docker."""

from __future__ import annotations

import re

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "gefyra-async"
COMPONENT = "gefyra-async.dev/component"
CONNECTION = "gefyra-async.dev/connection"
ROLE = "gefyra-async.dev/role"
APP = "gefyra-async.dev/app"  # on a netns holder: the name of its app container
ROLE_APP = "app"
ROLE_HOLDER = "netns"

CLIENT_VERSION = "v1alpha1"
CLIENT_PLURAL = "clients"
CLIENT_KIND = "Client"

BRIDGE_PLURAL = "bridges"
BRIDGE_KIND = "Bridge"
# Stowaway removes it once no carrier still applies a deleted bridge.
BRIDGE_FINALIZER = "gefyra-async.dev/carrier"

STOWAWAY = "stowaway"
STOWAWAY_TUNNEL_SERVICE = "stowaway-tunnel"
STOWAWAY_KEY_SECRET = "stowaway-server-key"
STOWAWAY_LISTEN_PORT = 51820
STOWAWAY_CONTROL_SERVICE = "stowaway-control"
RELAY_PORT = 51821  # TCP, loopback of stowaway's pod: framed tunnel datagrams (API transport)
PROBE_PORT = 51822  # UDP, on the tunnel Service too: stowaway echoes UDP probes
CONTROL_PORT = 7700  # carriers and cargos keep one JSON-lines connection to stowaway
CARRIER_PREFIX = "gefyra-carrier"  # ephemeral containers: gefyra-carrier-1, -2, ...
CARRIER_COMMENT = "gefyra-async-carrier"  # iptables comment on carrier's redirects

IMAGE_COMPONENT = "gefyra-async.dev/image"  # on the product's images: which component
VERSION = "app.kubernetes.io/version"  # on stowaway's Deployment: the cluster side's version


def network_name(connection: str) -> str:
    """The Docker network of CONNECTION, where cargo and its apps live."""
    return f"gefyra-async-{connection}"


def cargo_name(connection: str) -> str:
    """CONNECTION's cargo container."""
    return f"gefyra-async-cargo-{connection}"


def labels(component: str, **extra: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGED_BY_VALUE, COMPONENT: component, **extra}


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def valid_namespace(name: str) -> bool:
    """A Kubernetes namespace name (an RFC 1123 DNS label)."""
    return bool(_DNS_LABEL.match(name))
