"""One TCP stream to a pod's port through the Kubernetes API server, as kubectl port-forward.

Only the API server has to be reachable: the stream goes client → API server → kubelet →
container runtime, which dials ``localhost:<port>`` inside the pod's network namespace.

The protocol is the WebSocket one of the kubelet's streaming server
(``k8s.io/kubelet/pkg/cri/streaming/portforward/websocket.go``; containerd and CRI-O
serve the same code): ``GET .../pods/<pod>/portforward?ports=<port>`` upgraded to a
WebSocket with subprotocol ``v4.channel.k8s.io``. Every binary message starts with a
channel byte: for the first (only) port, 0 carries data both ways and 1 carries errors
from the server. The server's first message on each channel is the port, 2 bytes
little-endian. Data the client sends is ``b"\\x00" + payload``, with no port prefix.
When the connection in the pod ends, or cannot be made, the server writes the reason to
channel 1 (plain text; newer kubelets JSON ``{"message": ...}``) and closes the WebSocket.
There is no half-close: closing is closing the WebSocket, and the runtime then closes the
connection in the pod.

kubectl (client-go 1.30+) instead tunnels SPDY through the WebSocket (subprotocol
``SPDY/3.1+portforward.k8s.io``, feature gate ``PortForwardWebsockets``), which the API
server translates back into SPDY towards the kubelet; that needs a SPDY/3.1 stack and
buys multiplexing this single-stream use does not need.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import anyio.abc
import structlog

log = structlog.get_logger(__name__)

PROTOCOL = "v4.channel.k8s.io"
DATA_CHANNEL = 0
ERROR_CHANNEL = 1
DEFAULT_CONNECT_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
# The largest message taken from the server (the runtime sends at most 32 KiB at a time)
# and the largest one sent: bigger sends are split.
MAX_MESSAGE = 4 * 1024 * 1024
SEND_CHUNK = 256 * 1024
_DATA_PREFIX = bytes([DATA_CHANNEL])
_NETWORK_ERRORS = (aiohttp.ClientError, OSError)
# Close codes of an orderly end: 1000, or a close frame without a code (aiohttp: 0), or
# no close frame at all (1006): the API server's upgrade proxy passes bytes through and
# can end the TCP connection right after the kubelet closed its side, before the close
# frame (seen on a loaded machine). A lost connection shows as a network error instead.
_CLEAN_CLOSE = (None, 0, aiohttp.WSCloseCode.OK, aiohttp.WSCloseCode.ABNORMAL_CLOSURE)


class PortForwardError(RuntimeError):
    """A port-forward could not be opened or broke; the message says what to do.

    ``detail`` keeps what the server said, for ``--debug`` and logs.
    """

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class PortForwardStream(anyio.abc.ByteStream):
    """The byte stream of one open port-forward; made by ``open_port_forward``.

    One task may send while another receives. ``receive`` raises ``anyio.EndOfStream``
    when the connection in the pod ended normally, PortForwardError when it failed.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, target: str, port: int) -> None:
        self._ws = ws
        self._target = target
        self._port = port
        self._prefix_seen = [False, False]  # per channel: the server's port announcement
        self._pending = b""  # received data not yet handed out
        self._failure: PortForwardError | None = None
        self._ended = False
        self._closed = False
        self._send_lock = anyio.Lock()
        self._receive_lock = anyio.Lock()

    async def _read_announcements(self) -> None:
        """Wait for the server's port announcements: the runtime has taken the stream."""
        while not all(self._prefix_seen):
            channel, payload = await self._next_message()
            if payload:
                self._take(channel, payload)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        async with self._receive_lock:
            while not self._pending:
                if self._closed:
                    raise anyio.ClosedResourceError
                if self._failure is not None:
                    raise self._failure
                if self._ended:
                    raise anyio.EndOfStream
                channel, payload = await self._next_message()
                self._take(channel, payload)
            data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
            return data

    async def send(self, item: bytes) -> None:
        async with self._send_lock:
            view = memoryview(item)
            for start in range(0, len(view), SEND_CHUNK):
                if self._closed:
                    raise anyio.ClosedResourceError
                if self._failure is not None:
                    raise self._failure
                if self._ended or self._ws.closed:
                    raise self._fail(
                        f"the port-forward to {self._target} was closed by the pod's end; "
                        "open a new one"
                    )
                try:
                    await self._ws.send_bytes(_DATA_PREFIX + view[start : start + SEND_CHUNK])
                except _NETWORK_ERRORS as exc:
                    raise self._fail(
                        f"the port-forward to {self._target} broke while sending ({exc}); "
                        "open a new one",
                        cause=exc,
                    ) from exc

    async def send_eof(self) -> None:
        raise NotImplementedError(
            "the port-forward protocol has no half-close; close the stream instead"
        )

    async def aclose(self) -> None:
        """Close the WebSocket; the runtime then closes the connection in the pod."""
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await self._ws.close()
            except _NETWORK_ERRORS as exc:
                log.debug("port-forward close failed", target=self._target, error=str(exc))

    # ---- the protocol ---------------------------------------------------------------------

    async def _next_message(self) -> tuple[int, bytes]:
        """The next message's channel and payload (port announcements stripped)."""
        while True:
            try:
                message = await self._ws.receive()
            except _NETWORK_ERRORS as exc:
                raise self._fail(self._cut_message(exc), cause=exc) from exc
            if message.type is aiohttp.WSMsgType.BINARY:
                data: bytes = message.data
                if not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel not in (DATA_CHANNEL, ERROR_CHANNEL):
                    raise self._fail(
                        f"the API server sent on channel {channel} of a one-port "
                        f"port-forward to {self._target}; report this as a bug"
                    )
                if not self._prefix_seen[channel]:
                    payload = self._strip_port(channel, payload)
                return channel, payload
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                if self._closed:
                    raise anyio.ClosedResourceError
                if self._ws.close_code not in _CLEAN_CLOSE:
                    raise self._fail(self._cut_message(f"close code {self._ws.close_code}"))
                self._ended = True
                raise anyio.EndOfStream
            if message.type is aiohttp.WSMsgType.ERROR:
                raise self._fail(self._cut_message(message.data), cause=message.data)
            # TEXT is not part of the binary protocol; PING and PONG are answered by aiohttp.
            log.debug("port-forward message ignored", target=self._target, type=message.type)

    def _strip_port(self, channel: int, payload: bytes) -> bytes:
        if len(payload) < 2 or int.from_bytes(payload[:2], "little") != self._port:
            raise self._fail(
                f"the API server announced {payload[:2].hex() or 'no port'} instead of port "
                f"{self._port} for the port-forward to {self._target}; report this as a bug"
            )
        self._prefix_seen[channel] = True
        return payload[2:]

    def _take(self, channel: int, payload: bytes) -> None:
        if channel == DATA_CHANNEL:
            self._pending += payload
            return
        detail = _error_text(payload)
        log.debug("port-forward error from the cluster", target=self._target, detail=detail)
        raise self._fail(_explain_stream_error(self._target, self._port, detail), detail=detail)

    def _fail(
        self, message: str, *, detail: str = "", cause: BaseException | None = None
    ) -> PortForwardError:
        """Remember the stream's first failure, so every later call raises it too."""
        if self._failure is None:
            self._failure = PortForwardError(message, detail=detail or str(cause or ""))
            self._failure.__cause__ = cause
        return self._failure

    def _cut_message(self, reason: object) -> str:
        return (
            f"the port-forward to {self._target} was cut ({reason or 'connection lost'}); "
            "check that the API server is reachable and open a new one"
        )


@dataclass(frozen=True)
class _Request:
    """How every request to the API server goes: where, credentials, TLS, proxy."""

    pod_url: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | bool
    server_hostname: str | None
    proxy: str | None


@asynccontextmanager
async def open_port_forward(
    configuration: Any,
    *,
    namespace: str,
    pod: str,
    port: int,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[PortForwardStream]:
    """A byte stream to PORT of POD, through the API server CONFIGURATION names.

    CONFIGURATION is a ``kubernetes_asyncio.client.Configuration`` (``api.configuration``
    of what ``kube_config.load_api_client`` returns): server URL, TLS files and flags, and
    the bearer token, refreshed through its hook (exec plugins, OIDC) on every open.
    Yields once the runtime took the stream; whether something listens on PORT shows on
    the first ``receive``. Raises PortForwardError for every failure.
    """
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a port")
    target = f"{namespace}/{pod}:{port}"
    server = str(configuration.host).rstrip("/")
    try:
        tls = _ssl_context(configuration) if server.startswith("https:") else None
    except (OSError, ValueError) as exc:
        raise PortForwardError(
            f"the kubeconfig's TLS files cannot be used ({exc}); fix the kubeconfig"
        ) from exc
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}"
    request = _Request(
        pod_url=f"{server}{path}",
        headers=await _auth_headers(configuration),
        ssl=tls if tls is not None else True,
        server_hostname=getattr(configuration, "tls_server_name", None),
        proxy=getattr(configuration, "proxy", None),
    )
    # Proxies from the environment are honoured, as the API client's requests do.
    session = aiohttp.ClientSession(trust_env=True)
    try:
        with _connect_errors_mapped(server, connect_timeout):
            await _check_pod_runs(session, request, pod=f"{namespace}/{pod}")
            ws = await _upgrade(session, request, target=target, server=server, port=port)
        stream = PortForwardStream(ws, target=target, port=port)
        try:
            await _wait_ready(stream, target=target, connect_timeout=connect_timeout)
            log.debug("port-forward open", target=target, server=server)
            yield stream
        finally:
            await stream.aclose()
    finally:
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await session.close()


@contextmanager
def _connect_errors_mapped(server: str, connect_timeout: float) -> Iterator[None]:
    """Bound connecting by ``connect_timeout``; a silent or unreachable server, explained."""
    try:
        with anyio.fail_after(connect_timeout):
            yield
    except TimeoutError as exc:
        raise PortForwardError(
            f"the Kubernetes API server at {server} did not answer within {connect_timeout:g} s; "
            "check that the cluster runs and that the kubeconfig points to it"
        ) from exc
    except _NETWORK_ERRORS as exc:
        raise PortForwardError(
            f"the Kubernetes API server at {server} is not reachable ({_reason(exc)}); check that "
            "the cluster runs and that the kubeconfig points to it",
            detail=repr(exc),
        ) from exc


async def _check_pod_runs(session: aiohttp.ClientSession, request: _Request, *, pod: str) -> None:
    """Refuse a missing or not running pod before the upgrade, as kubectl does.

    The runtime would take a stream for a pod still Pending (its sandbox exists) and answer
    "connection refused"; and a refused upgrade's status body, which would say why, is not
    kept by aiohttp. A user who may not read pods (401, 403) learns more from the upgrade.
    """
    async with session.get(
        request.pod_url,
        headers=request.headers,
        ssl=request.ssl,
        server_hostname=request.server_hostname,
        proxy=request.proxy,
    ) as response:
        if response.status == 404:
            raise PortForwardError(f"the pod {pod} does not exist; check its name and namespace")
        if response.status != 200:
            return
        try:
            body = await response.json()
        except (ValueError, aiohttp.ContentTypeError):
            return
    status = body.get("status") if isinstance(body, dict) else None
    phase = status.get("phase") if isinstance(status, dict) else None
    if phase and phase != "Running":
        raise PortForwardError(
            f"the pod {pod} is not running (phase {phase}); wait until it runs, or start it again"
        )


async def _upgrade(
    session: aiohttp.ClientSession, request: _Request, *, target: str, server: str, port: int
) -> aiohttp.ClientWebSocketResponse:
    try:
        ws = await session.ws_connect(
            f"{request.pod_url}/portforward",
            params={"ports": str(port)},
            protocols=(PROTOCOL,),
            # No compression: aiohttp compresses large frames in tasks of its own.
            compress=0,
            autoping=True,
            heartbeat=None,
            max_msg_size=MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            headers=request.headers,
            ssl=request.ssl,
            server_hostname=request.server_hostname,
            proxy=request.proxy,
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise PortForwardError(
            _refusal(exc.status, target, server), detail=f"{exc.status} {exc.message}"
        ) from exc
    if ws.protocol != PROTOCOL:
        await ws.close()
        raise PortForwardError(
            f"the API server at {server} accepted the port-forward without the "
            f"{PROTOCOL} protocol (it chose {ws.protocol!r}); check for a proxy between "
            "here and the API server that rewrites WebSocket requests"
        )
    return ws


def _refusal(status: int, target: str, server: str) -> str:
    """One sentence on why the API server refused the upgrade."""
    if status == 401:
        return (
            f"the API server at {server} did not accept the kubeconfig's credentials (401); "
            "log in again or renew them"
        )
    if status == 403:
        return (
            f"the kubeconfig's user may not port-forward to {target} (403); it needs the "
            "RBAC permission to create pods/portforward in that namespace"
        )
    if status == 404:
        return f"the pod {target.rsplit(':', 1)[0]} does not exist; check its name and namespace"
    if status == 101:
        return (
            f"the API server at {server} answered the upgrade for {target} with a broken "
            "WebSocket handshake; check for a proxy between here and the API server"
        )
    return (
        f"the API server at {server} refused the port-forward to {target} (HTTP {status}); "
        "check that the pod runs and look at the API server's and the kubelet's logs"
    )


async def _wait_ready(stream: PortForwardStream, *, target: str, connect_timeout: float) -> None:
    try:
        with anyio.fail_after(connect_timeout):
            await stream._read_announcements()
    except TimeoutError as exc:
        raise PortForwardError(
            f"the port-forward to {target} was accepted but the node never started it "
            f"(within {connect_timeout:g} s); check the node and its container runtime"
        ) from exc


def _ssl_context(configuration: Any) -> ssl.SSLContext:
    """TLS as kubernetes_asyncio's REST client sets it up, from the same fields."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if getattr(configuration, "disable_strict_ssl_verification", False):
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


async def _auth_headers(configuration: Any) -> dict[str, str]:
    """The Authorization header, after the configuration's refresh hook had its say."""
    headers: dict[str, str] = {}
    settings: dict[str, dict[str, Any]] = await configuration.auth_settings()
    for setting in settings.values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[str(setting["key"])] = str(setting["value"])
    return headers


def _reason(exc: BaseException) -> str:
    """The short part of a network error: the OS's words when there are some."""
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)


def _error_text(payload: bytes) -> str:
    """What the server wrote on the error channel: text, or JSON with a message."""
    text = payload.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    message = decoded.get("message") if isinstance(decoded, dict) else None
    return message if isinstance(message, str) else text


def _explain_stream_error(target: str, port: int, detail: str) -> str:
    if "connection refused" in detail:
        return (
            f"nothing listens on port {port} in the pod {target.rsplit(':', 1)[0]} "
            "(connection refused); check the port and that the app in the pod is up"
        )
    if "network namespace" in detail and "closed" in detail:
        return (
            f"the pod {target.rsplit(':', 1)[0]} has stopped; wait for it to run again "
            "and open a new port-forward"
        )
    return (
        f"the port-forward to {target} failed in the cluster ({detail}); "
        "check the pod and open a new one"
    )
