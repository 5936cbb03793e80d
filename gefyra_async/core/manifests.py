"""The cluster side of gefyra-async as plain Kubernetes objects (dicts).

Everything carries ``app.kubernetes.io/managed-by: gefyra-async``, which is how
``down`` finds what to delete and how tests prove nothing is left.
"""

from __future__ import annotations

from typing import Any

from gefyra_async.core import names
from gefyra_async.core.settings import Settings

Obj = dict[str, Any]


def crd(settings: Settings) -> Obj:
    group = settings.api_group
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.CLIENT_PLURAL}.{group}",
            "labels": names.labels("crd"),
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": names.CLIENT_PLURAL,
                "singular": "client",
                "kind": names.CLIENT_KIND,
                "shortNames": ["gaclient"],
            },
            "versions": [
                {
                    "name": names.CLIENT_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Address", "type": "string", "jsonPath": ".status.tunnelAddress"},
                        {
                            "name": "Connected",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Connected")].status',
                        },
                        {"name": "Handshake", "type": "date", "jsonPath": ".status.lastHandshake"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
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
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [settings.api_group],
                "resources": [f"{names.CLIENT_PLURAL}/status"],
                "verbs": ["get", "patch", "update"],
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
    """Cluster-wide reads stowaway needs to tell clients what to route: the pod and
    service ranges."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"gefyra-async-{names.STOWAWAY}", "labels": names.labels("rbac")},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["servicecidrs"],
                "verbs": ["get", "list"],
            },
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
    name = f"gefyra-async-{names.STOWAWAY}"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": names.labels("rbac")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": names.STOWAWAY, "namespace": settings.namespace}
        ],
    }


def stowaway_deployment(settings: Settings, image: str) -> Obj:
    pod_labels = names.labels(names.STOWAWAY)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.STOWAWAY,
            "namespace": settings.namespace,
            "labels": pod_labels,
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
                            "command": ["python3", "-m", "gefyra_async.agents.stowaway"],
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
                            ],
                            "ports": [
                                {
                                    "name": "wireguard",
                                    "containerPort": names.STOWAWAY_LISTEN_PORT,
                                    "protocol": "UDP",
                                }
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


def tunnel_service(settings: Settings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.STOWAWAY_TUNNEL_SERVICE,
            "namespace": settings.namespace,
            "labels": names.labels(names.STOWAWAY),
        },
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
                }
            ],
        },
    }


def cluster_side(settings: Settings, stowaway_image: str) -> list[Obj]:
    """Everything `up` installs, in creation order (`down` removes it in reverse)."""
    return [
        namespace(settings),
        crd(settings),
        service_account(settings),
        role(settings),
        cluster_role(settings),
        role_binding(settings),
        cluster_role_binding(settings),
        tunnel_service(settings),
        stowaway_deployment(settings, stowaway_image),
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
