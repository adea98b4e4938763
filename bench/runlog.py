"""What a benchmark run leaves to read afterwards: its log file and the pods' container logs.

The log file has one line per event, stamped with the wall clock (to line up with the pods'
logs) and the seconds since the run started (to read spans). The testbed deletes a pod's
container logs with the pod, so :class:`PodLogs` copies them as they grow: a replaced
replica's log is what explains a slow or failed push.
"""

import contextlib
import datetime
import shutil
import threading
import time
from pathlib import Path
from typing import TextIO

from bench import kube, traffic
from gitquorum_testbed import cluster, install


class Log:
    """The run's log file; ``step`` also prints the line, as progress."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self.started = started
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "Log":
        self._file = self.path.open("w")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def step(self, text: str) -> None:
        print(f"   {text}", flush=True)
        self.write(text)

    def write(self, text: str) -> None:
        assert self._file is not None
        # Wall clock, to line up with the pods' logs; seconds since the start, to read spans.
        stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        with self._lock:
            for line in text.splitlines() or [""]:
                self._file.write(f"{stamp} {self.at():8.2f} {line}\n")
            self._file.flush()

    def at(self, moment: float | None = None) -> float:
        return (time.monotonic() if moment is None else moment) - self.started

    def operation(self, op: traffic.Operation) -> None:
        outcome = "ok" if op.ok else f"FAILED {op.message}"
        self.write(
            f"{op.kind} from {self.at(op.started):.2f} took {op.seconds * 1000:.0f} ms {outcome}"
        )


class PodLogs:
    """Copies the container logs of the followed namespaces' pods, and the operator's."""

    def __init__(self, bed: cluster.Testbed, api: kube.Kube, directory: Path) -> None:
        self.bed = bed
        self.api = api
        self.directory = directory
        self.namespaces = [install.NAMESPACE]
        self._sizes: dict[Path, int] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-logs", daemon=True)

    def __enter__(self) -> "PodLogs":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join()
        self._copy()

    def follow(self, namespace: str) -> None:
        self.namespaces.append(namespace)

    def _loop(self) -> None:
        while not self._stopping.wait(1.0):
            with contextlib.suppress(Exception):  # a pod gone mid-copy; the next pass goes on
                self._copy()

    def _copy(self) -> None:
        for namespace in list(self.namespaces):
            for pod in self.api.core.list_namespaced_pod(namespace).items:
                if not pod.spec.node_name:
                    continue
                logs = self.bed.layout.node_dir(pod.spec.node_name) / "pods" / pod.metadata.uid
                for source in (logs / "logs").glob("*.log"):
                    name = f"{pod.metadata.name}-{pod.metadata.uid[:8]}-{source.name}"
                    target = self.directory / namespace / name
                    size = source.stat().st_size
                    if self._sizes.get(target) != size:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(source, target)
                        self._sizes[target] = size
