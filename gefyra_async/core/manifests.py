"""The cluster side of gefyra-async as plain Kubernetes objects (dicts).

Everything carries ``app.kubernetes.io/managed-by: gefyra-async``, which is how
``down`` finds what to delete and how tests prove nothing is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gefyra_async.core import images, names
from gefyra_async.core.settings import Settings

Obj = dict[str, Any]

# Kinds without a namespace (the rest live in the cluster side's namespace).
CLUSTER_SCOPED = frozenset(
    {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
)


def _crd(
    settings: Settings,
    plural: str,
    kind: str,
    short: str,
    columns: list[dict[str, str]],
    spec_schema: Obj,
) -> Obj:
    group = settings.api_group
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": names.labels("crd")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "shortNames": [short],
            },
            "versions": [
                {
                    "name": names.CLIENT_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def crd(settings: Settings) -> Obj:
    return _crd(
        settings,
        names.CLIENT_PLURAL,
        names.CLIENT_KIND,
        "gaclient",
        [
            {"name": "Address", "type": "string", "jsonPath": ".status.tunnelAddress"},
            {
                "name": "Connected",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Connected")].status',
            },
            {"name": "Handshake", "type": "date", "jsonPath": ".status.lastHandshake"},
        ],
        {
            "type": "object",
            "required": ["publicKey"],
            "properties": {
                "publicKey": {
                    "type": "string",
                    "description": "the client's WireGuard public key "
                    "(base64); the private key never leaves the client",
                    "pattern": "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
                },
                "localSubnet": {
                    "type": "string",
                    "description": "the client's local Docker subnet",
                },
            },
        },
    )


def bridge_crd(settings: Settings) -> Obj:
    string = {"type": "string"}
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    return _crd(
        settings,
        names.BRIDGE_PLURAL,
        names.BRIDGE_KIND,
        "gabridge",
        [
            {"name": "Client", "type": "string", "jsonPath": ".spec.client"},
            {"name": "Namespace", "type": "string", "jsonPath": ".spec.target.namespace"},
            {"name": "Target", "type": "string", "jsonPath": ".status.targetText"},
            {"name": "Local", "type": "string", "jsonPath": ".spec.destination.container"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Pods", "type": "string", "jsonPath": ".status.bridgedText"},
        ],
        {
            "type": "object",
            "required": ["client", "target", "ports", "destination"],
            "properties": {
                "client": {**string, "description": "the Client (connection) that owns it"},
                "target": {
                    "type": "object",
                    "required": ["namespace", "kind", "name", "container"],
                    "properties": {
                        "namespace": string,
                        "kind": {"type": "string", "enum": ["Deployment", "StatefulSet", "Pod"]},
                        "name": string,
                        "container": string,
                    },
                },
                "ports": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["remote", "local"],
                        "properties": {"remote": port, "local": port},
                    },
                },
                "destination": {
                    "type": "object",
                    "required": ["container"],
                    "properties": {
                        "container": {
                            **string,
                            "description": "the local container (its address comes from cargo)",
                        }
                    },
                },
                "rules": {
                    "type": "array",
                    "description": "HTTP match rules, all must match; none: every connection",
                    "items": {
                        "type": "object",
                        "required": ["kind", "match", "value"],
                        "properties": {
                            "kind": {"type": "string", "enum": ["header", "path"]},
                            "name": string,
                            "match": {"type": "string", "enum": ["exact", "prefix", "regex"]},
                            "value": string,
                        },
                    },
                },
            },
        },
    )


def namespace(settings: Settings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": names.labels("namespace")},
    }


def service_account(settings: Settings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": names.STOWAWAY,
            "namespace": settings.namespace,
            "labels": names.labels(names.STOWAWAY),
        },
    }


def role(settings: Settings) -> Obj:
    """What stowaway may do in its own namespace: its clients, its key, events."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": names.STOWAWAY,
            "namespace": settings.namespace,
            "labels": names.labels(names.STOWAWAY),
        },
        "rules": [
            {
                "apiGroups": [settings.api_group],
                "resources": [names.CLIENT_PLURAL],
                "verbs": ["get", "list", "watch", "delete"],  # delete: the watchdog
            },
            {
                "apiGroups": [settings.api_group],
                "resources": [f"{names.CLIENT_PLURAL}/status"],
                "verbs": ["get", "patch", "update"],
            },
            {
                "apiGroups": [settings.api_group],
                "resources": [names.BRIDGE_PLURAL],
                "verbs": ["get", "list", "watch", "patch", "update"],
            },
            {
                "apiGroups": [settings.api_group],
                "resources": [f"{names.BRIDGE_PLURAL}/status"],
                "verbs": ["get", "patch", "update"],
            },
            {
                "apiGroups": [""],
                "resources": ["services"],
                "resourceNames": [names.STOWAWAY_CONTROL_SERVICE],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [names.STOWAWAY_KEY_SECRET],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        ],
    }


def cluster_role(settings: Settings) -> Obj:
    """Cluster-wide rights of stowaway: the pod and service ranges (for clients' routes);
    the bridged workloads and their pods, carrier added as an ephemeral container, and
    Events on those pods."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": cluster_role_name(settings), "labels": names.labels("rbac")},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["servicecidrs"],
                "verbs": ["get", "list"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]},
            {
                "apiGroups": ["apps"],
                "resources": ["deployments", "statefulsets"],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ],
    }


def role_binding(settings: Settings) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": names.STOWAWAY,
            "namespace": settings.namespace,
            "labels": names.labels(names.STOWAWAY),
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": names.STOWAWAY,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": names.STOWAWAY, "namespace": settings.namespace}
        ],
    }


def cluster_role_binding(settings: Settings) -> Obj:
    name = cluster_role_name(settings)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": names.labels("rbac")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": names.STOWAWAY, "namespace": settings.namespace}
        ],
    }


def cluster_role_name(settings: Settings) -> str:
    """Cluster-scoped names carry the namespace: two installs in two namespaces coexist."""
    return f"{settings.namespace}-{names.STOWAWAY}"


def stowaway_deployment(settings: Settings, version: str) -> Obj:
    pod_labels = names.labels(names.STOWAWAY)
    image = images.image_ref(settings.registry, "stowaway", version)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.STOWAWAY,
            "namespace": settings.namespace,
            "labels": {**pod_labels, names.VERSION: version},
        },
        "spec": {
            "replicas": 1,
            # One WireGuard server per cluster: never two at once during an update.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": names.STOWAWAY,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": names.STOWAWAY,
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-m", "gefyra_async.stowaway"],
                            "env": [
                                {
                                    "name": "GEFYRA_ASYNC_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                },
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                                {"name": "GEFYRA_ASYNC_API_GROUP", "value": settings.api_group},
                                {"name": "GEFYRA_ASYNC_TUNNEL_CIDR", "value": settings.tunnel_cidr},
                                {
                                    "name": "GEFYRA_ASYNC_TUNNEL_MTU",
                                    "value": str(settings.tunnel_mtu),
                                },
                                {
                                    "name": "GEFYRA_ASYNC_CARRIER_IMAGE",
                                    "value": images.image_ref(
                                        settings.registry, "carrier", version
                                    ),
                                },
                                {
                                    "name": "GEFYRA_ASYNC_CARRIER_ORPHAN_TIMEOUT",
                                    "value": str(settings.carrier_orphan_timeout),
                                },
                                {
                                    "name": "GEFYRA_ASYNC_CLIENT_SILENCE_LIMIT",
                                    "value": str(settings.client_silence_limit),
                                },
                                {
                                    "name": "GEFYRA_ASYNC_CLIENT_REAP_AFTER",
                                    "value": str(settings.client_reap_after),
                                },
                            ],
                            "ports": [
                                {
                                    "name": "wireguard",
                                    "containerPort": names.STOWAWAY_LISTEN_PORT,
                                    "protocol": "UDP",
                                },
                                {
                                    "name": "control",
                                    "containerPort": names.CONTROL_PORT,
                                    "protocol": "TCP",
                                },
                                {
                                    "name": "probe",
                                    "containerPort": names.PROBE_PORT,
                                    "protocol": "UDP",
                                },
                                # The API transport's relay listens on the pod's loopback
                                # only (a port-forward dials localhost in the pod).
                            ],
                            # WireGuard needs a TUN device and NET_ADMIN.
                            "securityContext": {"privileged": True},
                            "readinessProbe": {
                                "exec": {"command": ["test", "-f", "/run/stowaway/ready"]},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def tunnel_service(settings: Settings, annotations: Mapping[str, str] | None = None) -> Obj:
    """The tunnel's UDP port for clients. ANNOTATIONS: what a cloud's load balancer
    controller reads (internal, UDP health checks, ...), from the admin."""
    metadata: Obj = {
        "name": names.STOWAWAY_TUNNEL_SERVICE,
        "namespace": settings.namespace,
        "labels": names.labels(names.STOWAWAY),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": settings.tunnel_service_type,
            "selector": names.labels(names.STOWAWAY),
            "ports": [
                {
                    "name": "wireguard",
                    "protocol": "UDP",
                    "port": names.STOWAWAY_LISTEN_PORT,
                    "targetPort": names.STOWAWAY_LISTEN_PORT,
                    **(
                        {"nodePort": settings.tunnel_port}
                        if settings.tunnel_service_type == "NodePort"
                        else {}
                    ),
                },
                # Clients probe UDP here while their tunnel runs through the API server
                # (the node port is Kubernetes' choice; clients read it from here).
                {
                    "name": "probe",
                    "protocol": "UDP",
                    "port": names.PROBE_PORT,
                    "targetPort": names.PROBE_PORT,
                },
            ],
        },
    }


def control_service(settings: Settings) -> Obj:
    """Where carriers reach stowaway's control server (inside the cluster only)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.STOWAWAY_CONTROL_SERVICE,
            "namespace": settings.namespace,
            "labels": names.labels(names.STOWAWAY),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": names.labels(names.STOWAWAY),
            "ports": [
                {
                    "name": "control",
                    "protocol": "TCP",
                    "port": names.CONTROL_PORT,
                    "targetPort": names.CONTROL_PORT,
                }
            ],
        },
    }


def cluster_side(
    settings: Settings, version: str, *, service_annotations: Mapping[str, str] | None = None
) -> list[Obj]:
    """Everything `install` (and `up`) creates, in creation order (`uninstall` removes it in
    reverse). The images are ``<settings.registry>/<component>:<version>``."""
    return [
        namespace(settings),
        crd(settings),
        bridge_crd(settings),
        service_account(settings),
        role(settings),
        cluster_role(settings),
        role_binding(settings),
        cluster_role_binding(settings),
        tunnel_service(settings, service_annotations),
        control_service(settings),
        stowaway_deployment(settings, version),
    ]


def client(settings: Settings, name: str, public_key: str, local_subnet: str | None) -> Obj:
    spec: dict[str, str] = {"publicKey": public_key}
    if local_subnet:
        spec["localSubnet"] = local_subnet
    return {
        "apiVersion": f"{settings.api_group}/{names.CLIENT_VERSION}",
        "kind": names.CLIENT_KIND,
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": names.labels("client", **{names.CONNECTION: name}),
        },
        "spec": spec,
    }


def carrier_container(
    name: str,
    image: str,
    *,
    control: str,
    namespace: str,
    pod: str,
    token: str,
    orphan_timeout: float,
) -> Obj:
    """Carrier as an ephemeral container: shares the pod's network namespace, may change
    its iptables (NET_ADMIN) and runs as root even in pods that run as another user."""
    env = {
        "GEFYRA_ASYNC_CONTROL": control,
        "GEFYRA_ASYNC_POD_NAMESPACE": namespace,
        "GEFYRA_ASYNC_POD_NAME": pod,
        "GEFYRA_ASYNC_CARRIER_NAME": name,
        "GEFYRA_ASYNC_CARRIER_TOKEN": token,
        "GEFYRA_ASYNC_ORPHAN_TIMEOUT": str(orphan_timeout),
    }
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "gefyra_async.carrier"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
        },
    }


def bridge(
    settings: Settings,
    name: str,
    *,
    client: str,
    client_uid: str,
    target: dict[str, str],
    ports: list[dict[str, int]],
    local_container: str,
    rules: list[dict[str, str]],
) -> Obj:
    """A Bridge object, owned by its Client (deleted with it) and finalized by stowaway."""
    return {
        "apiVersion": f"{settings.api_group}/{names.CLIENT_VERSION}",
        "kind": names.BRIDGE_KIND,
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": names.labels("bridge", **{names.CONNECTION: client}),
            "finalizers": [names.BRIDGE_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": f"{settings.api_group}/{names.CLIENT_VERSION}",
                    "kind": names.CLIENT_KIND,
                    "name": client,
                    "uid": client_uid,
                }
            ],
        },
        "spec": {
            "client": client,
            "target": target,
            "ports": ports,
            "destination": {"container": local_container},
            "rules": rules,
        },
    }
