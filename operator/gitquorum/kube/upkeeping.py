"""Maintenance permits in a pass, for repositories with ``spec.maintenance.window``.

While the window is open, a replica that reports maintenance or a scrub due gets a permit
(``PUT /admin/upkeep``) lasting until the window closes, if its node has a free slot
(``Settings.max_maintenance_per_node``, over every repository this operator runs). A replica
that has nothing due any more, or whose window closed, has its permit ended (``permitSeconds``
0) and its slot freed. The replicas still take turns among themselves (the leader grants them,
its own last), so a permit never lets two replicas of one repository work at once.
"""

import datetime
import logging
from collections.abc import Mapping

from gitquorum.kube import context, names, planning, windows
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import peerclient

log = logging.getLogger("gitquorum.kube.reconciler")


class Upkeeping(context.Context):
    """Gives and ends maintenance permits."""

    async def _permit_upkeep(
        self,
        body: context.Body,
        spec: RepositorySpec,
        observed: Mapping[str, planning.Observed],
        memory: context.Memory,
    ) -> None:
        try:
            window = windows.Window.from_spec(spec.maintenance_window)
        except ValueError as error:
            self._event(body, memory, "Warning", "MaintenanceWindowInvalid", str(error))
            return
        if window is None:
            return
        closes = window.open_until(datetime.datetime.now(datetime.UTC))
        uid = body["metadata"]["uid"]
        now = self.clock()
        self._expire_permits(now)
        due: list[tuple[str, str]] = []
        for item in observed.values():
            upkeep = None if item.report is None else item.report.upkeep
            if upkeep is None or item.node is None or item.ip is None:
                continue
            key = f"{uid}/{item.name}"
            wanted = closes is not None and bool(upkeep.due or upkeep.running)
            if not wanted:
                if upkeep.permit_seconds > 0 or self._holds(key):
                    await self._send_permit(item, memory, 0.0)
                    self._release(key)
                continue
            if not self._holds(key):
                due.append((key, item.node))
        if closes is None or not due:
            return
        held = {node: list(keys) for node, keys in self.upkeep_permits.items()}
        seconds = min(
            (closes - datetime.datetime.now(datetime.UTC)).total_seconds(),
            windows.MAX_PERMIT_SECONDS,
        )
        for key in windows.grant(due, held=held, per_node=self.settings.max_maintenance_per_node):
            name = key.split("/", 1)[1]
            item = observed[name]
            if await self._send_permit(item, memory, seconds):
                assert item.node is not None
                self.upkeep_permits.setdefault(item.node, {})[key] = now + seconds

    async def _send_permit(
        self, item: planning.Observed, memory: context.Memory, seconds: float
    ) -> bool:
        if memory.peers is None or item.ip is None:
            return False
        try:
            await memory.peers.call(
                f"http://{item.ip}:{names.PEER_PORT}",
                "/admin/upkeep",
                {"permitSeconds": round(max(0.0, seconds), 3)},
                method="PUT",
                timeout=self.settings.status_timeout * 2,
            )
        except peerclient.PeerError as error:
            log.info("replica %s: maintenance permit not given: %s", item.name, error)
            return False
        log.info("replica %s: maintenance permit for %.0f s", item.name, seconds)
        return True

    def _holds(self, key: str) -> bool:
        return any(key in keys for keys in self.upkeep_permits.values())

    def _release(self, key: str) -> None:
        for keys in self.upkeep_permits.values():
            keys.pop(key, None)

    def _expire_permits(self, now: float) -> None:
        for keys in self.upkeep_permits.values():
            for key in [key for key, until in keys.items() if until <= now]:
                del keys[key]
