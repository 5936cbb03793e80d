"""The stowaway agent: ``python3 -m gefyra_async.stowaway`` in the stowaway pod.

Actors: the tunnel (WireGuard server end + client reconciler), the control server
(carriers and cargos), the pod-rewriter (bridges → carriers), the watchdog, and the
watches that feed them: Clients, Bridges, and every pod of the cluster, each into a store
that the others read (and that outlives a watch's restart).
"""

from __future__ import annotations

import os

import anyio
import structlog

from gefyra_async.actors.bus_monitor import BusMonitor
from gefyra_async.actors.kube_watch import KubeWatchActor
from gefyra_async.actors.process import until_terminated
from gefyra_async.adapters.kube_objects import (
    ensure_secret_value,
    incluster_api,
    pods_everywhere,
    service_cluster_ip,
)
from gefyra_async.adapters.kube_watch import custom_objects_list, list_and_watch
from gefyra_async.adapters.wgkeys import KeyPair
from gefyra_async.core import names
from gefyra_async.core.actor import Actor, Backoff, Supervisor
from gefyra_async.core.bus import EventBus
from gefyra_async.core.logging import configure_logging
from gefyra_async.core.settings import Settings
from gefyra_async.core.store import Store
from gefyra_async.stowaway.control import ControlServer
from gefyra_async.stowaway.pod_rewriter import PodRewriter
from gefyra_async.stowaway.transports import StowawayTransports
from gefyra_async.stowaway.tunnel import StowawayTunnel
from gefyra_async.stowaway.watchdog import Watchdog

log = structlog.get_logger(__name__)


async def main() -> None:
    settings = Settings.from_env()
    configure_logging(debug=bool(os.environ.get("GEFYRA_ASYNC_DEBUG")))
    bus = EventBus(settings.bus_buffer)
    pod_ip = os.environ.get("POD_IP") or "127.0.0.1"
    carrier_image = os.environ.get("GEFYRA_ASYNC_CARRIER_IMAGE")
    if not carrier_image:
        # The installer sets it (manifests.stowaway_deployment); there is no sane default.
        raise SystemExit("GEFYRA_ASYNC_CARRIER_IMAGE is not set; reinstall the cluster side")
    async with await incluster_api() as api:
        secret = await ensure_secret_value(
            api,
            settings.namespace,
            names.STOWAWAY_KEY_SECRET,
            "privateKey",
            lambda: KeyPair.generate().private,
        )
        control_ip = None
        while control_ip is None:  # installed together with this deployment
            control_ip = await service_cluster_ip(
                api, settings.namespace, names.STOWAWAY_CONTROL_SERVICE
            )
            if control_ip is None:
                log.warning("control Service missing, waiting", name=names.STOWAWAY_CONTROL_SERVICE)
                await anyio.sleep(2)

        # A watch call ends by itself after kube_watch_timeout; silence beyond that (and a
        # request's time) means the connection died without a word.
        inactivity = settings.kube_watch_timeout + settings.kube_request_timeout
        clients, bridges, pods = (
            Store(names.CLIENT_PLURAL),
            Store(names.BRIDGE_PLURAL),
            Store("pods"),
        )

        def watch(store: Store) -> KubeWatchActor:
            listing = custom_objects_list(
                api, settings.api_group, names.CLIENT_VERSION, settings.namespace, store.resource
            )
            return KubeWatchActor(
                store,
                list_and_watch(api, listing, timeout_seconds=settings.kube_watch_timeout),
                inactivity=inactivity,
            )

        control = ControlServer(
            names.CONTROL_PORT,
            secret,
            settings.tunnel_cidr,
            cargo_silence_limit=settings.client_silence_limit,
        )
        actors: list[Actor] = [
            StowawayTunnel(settings, api, pod_ip, clients=clients),
            StowawayTransports(max_streams=settings.api_transport_max_streams),
            control,
            PodRewriter(
                settings,
                api,
                control,
                pod_ip=pod_ip,
                control_address=f"{control_ip}:{names.CONTROL_PORT}",
                carrier_image=carrier_image,
                secret=secret,
                pods=pods,
                bridges=bridges,
                clients=clients,
            ),
            Watchdog(settings, api, control, clients=clients),
            # Changes reach the reconcilers within a moment, not a period.
            watch(clients),
            watch(bridges),
            KubeWatchActor(
                pods,
                list_and_watch(
                    api, pods_everywhere(api), timeout_seconds=settings.kube_watch_timeout
                ),
                inactivity=inactivity,
            ),
            BusMonitor(settings.bus_report_period),
        ]
        log.info("stowaway starting", namespace=settings.namespace)
        await Supervisor(
            bus,
            actors,
            Backoff(
                settings.backoff_initial, settings.backoff_max, 2.0, settings.backoff_reset_after
            ),
        ).run()


def run() -> None:
    anyio.run(until_terminated, main)
