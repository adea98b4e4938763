"""The testbed's kube-proxy: a userspace TCP proxy on every Service ClusterIP.

The host treats the whole service range as local (see ``network``), so the proxy can listen on
``<clusterIP>:<port>`` for every Service port and forward each connection to one ready endpoint
from the Service's EndpointSlices, round-robin, trying the next endpoint when one refuses.
Reachable from the host and, through the bridge, from every pod, as kube-proxy makes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import logging
from pathlib import Path

from kubernetes import client, config

from gitquorum_testbed import settings

log = logging.getLogger("gitquorum_testbed.proxy")

SYNC_SECONDS = 0.5
CONNECT_TIMEOUT = 3.0
BUFFER = 256 * 1024

Key = tuple[str, int]  # (cluster IP, port)


class ServiceProxy:
    def __init__(self, api: client.CoreV1Api, discovery: client.DiscoveryV1Api) -> None:
        self.api = api
        self.discovery = discovery
        self.servers: dict[Key, asyncio.Server] = {}
        self.backends: dict[Key, list[tuple[str, int]]] = {}
        self.counter = itertools.count()

    async def run(self) -> None:
        while True:
            try:
                wanted = await asyncio.to_thread(self._desired)
                await self._apply(wanted)
            except Exception:
                log.exception("proxy: sync failed")
            await asyncio.sleep(SYNC_SECONDS)

    def _desired(self) -> dict[Key, list[tuple[str, int]]]:
        endpoints: dict[tuple[str, str], list[tuple[str, str | None, int]]] = {}
        for eps in self.discovery.list_endpoint_slice_for_all_namespaces().items:
            service = (eps.metadata.labels or {}).get("kubernetes.io/service-name")
            if not service:
                continue
            entries = endpoints.setdefault((eps.metadata.namespace, service), [])
            for port in eps.ports or []:
                for endpoint in eps.endpoints or []:
                    if endpoint.conditions is None or endpoint.conditions.ready is not False:
                        for address in endpoint.addresses:
                            entries.append((address, port.name, port.port))
        wanted: dict[Key, list[tuple[str, int]]] = {}
        for svc in self.api.list_service_for_all_namespaces().items:
            ip = svc.spec.cluster_ip
            if not ip or ip == "None":
                continue
            entries = endpoints.get((svc.metadata.namespace, svc.metadata.name), [])
            for sport in svc.spec.ports or []:
                if (sport.protocol or "TCP") != "TCP":
                    continue
                wanted[(ip, sport.port)] = [
                    (a, p) for a, name, p in entries if (name or None) == (sport.name or None)
                ]
        return wanted

    async def _apply(self, wanted: dict[Key, list[tuple[str, int]]]) -> None:
        self.backends = wanted
        for key in list(self.servers):
            if key not in wanted:
                server = self.servers.pop(key)
                server.close()
                log.info("proxy: closed %s:%s", *key)
        for key in wanted:
            if key in self.servers:
                continue
            try:
                self.servers[key] = await asyncio.start_server(
                    functools.partial(self._handle, key),
                    host=key[0],
                    port=key[1],
                    reuse_address=True,
                )
                log.info("proxy: listening on %s:%s", *key)
            except OSError as exc:
                log.warning("proxy: cannot listen on %s:%s: %s", key[0], key[1], exc)

    async def _handle(
        self, key: Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        backends = list(self.backends.get(key, []))
        upstream = None
        if backends:
            start = next(self.counter)
            for i in range(len(backends)):
                host, port = backends[(start + i) % len(backends)]
                try:
                    upstream = await asyncio.wait_for(
                        asyncio.open_connection(host, port), CONNECT_TIMEOUT
                    )
                    break
                except (OSError, TimeoutError):
                    continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction; pass a half-close on, and on an error close both ways."""
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="gitquorum-testbed-proxy")
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    layout = settings.Layout(args.root)
    configuration = client.Configuration()
    config.load_kube_config(str(layout.kubeconfig), client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    proxy = ServiceProxy(client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client))
    asyncio.run(proxy.run())


if __name__ == "__main__":
    main()
