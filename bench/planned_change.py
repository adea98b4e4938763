"""Planned change under a client: a rolling update, a switchover and a drain of the leader's node.

The testbed comes up as for the operator benchmark (at least four workers: a drained replica
needs a free node), with the chart installed and the operator restarted so that it runs this
tree. Each of ``--planned-rounds`` rounds creates a 3-replica GitRepository in a fresh namespace
(``spec.maintenance.cordonedNodeGraceSeconds`` 5 s, so a drained replica is rebuilt elsewhere
at once) and runs :class:`bench.traffic.Client` through its Service for the whole round: it
pushes and fetches in a loop without retrying, and checks that main is the last acknowledged
push. The round measures, one after the other, each from a settled repository (3 voting
replicas InSync at one checksum, Ready):

- baseline: ``--planned-baseline-seconds`` with nothing going on;
- switchover: ``kubectl annotate ... gitquorum.io/switchover=any`` until another replica leads
  and takes writes (the status names the successor a moment before it is in office);
- roll: a patch of ``spec.resources`` until ``updatedReplicas`` is 3 at a new
  ``updateRevision``, ``Updating`` is False and every replica is InSync (the roll's duration);
- drain: ``kubectl drain`` of the leader's node until another replica leads and three are in
  sync with none on that node; the node is uncordoned afterwards.

A window counts every operation that overlaps it. Operations outside every window (while the
repository settles) are reported apart. Each step prints one line; the whole story (every
operation, the status as it changes, events, command output) goes to a log file, and the
pods' container logs are copied next to it while they run (the testbed deletes them with the
pod), both under bench/results/.

Ratios, lower is better: push latency p50 and max of each scenario against the baseline's;
failed operations per scenario as a count (0 expected); the longest roll against the 60 s
target; the switchover's max push latency against the 2 s target.
"""

import argparse
import datetime
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import kube, operator, runlog, traffic
from gitquorum_testbed import binaries, install

NAME = "planned"
CORDONED_GRACE = 5
"""spec.maintenance.cordonedNodeGraceSeconds: rebuild a drained replica elsewhere at once."""
ROLL_TARGET = 60.0
"""Seconds for a rolling update of a 3-replica repository with small data (issue 16)."""
SWITCHOVER_TARGET = 2.0
"""Max push latency during a switchover (issue 16)."""
CHANGE_TIMEOUT = 300.0
"""Seconds a scenario may take before the benchmark gives up on it."""
DRAIN_TIMEOUT = 180
SCENARIOS = ("baseline", "switchover", "roll", "drain")
RESULTS = Path(__file__).resolve().parent / "results"
Body = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("planned")
    group.add_argument(
        "--planned-rounds",
        type=int,
        default=3,
        help="rounds of every planned-change scenario, each on a new repository "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--planned-baseline-seconds",
        type=float,
        default=30.0,
        help="seconds of traffic with nothing going on, per round (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = RESULTS / f"planned-{stamp}"
    directory.mkdir(parents=True)
    with runlog.Log(directory / "planned.log", started) as log:
        log.step(f"full log in {log.path}, pod logs in {directory}/pods")
        bed = operator.testbed()
        api = kube.Kube(bed)
        log.step("installing the chart and restarting the operator (on node-system)")
        install.install_chart(bed, node_loss_grace=operator.NODE_LOSS_GRACE)
        api.restart_operator()
        log.write(_tree_state())
        windows: list[Window] = []
        outside: list[traffic.Operation] = []
        with runlog.PodLogs(bed, api, directory / "pods") as pods:
            for index in range(args.planned_rounds):
                round_ = Round(api, log, index, args)
                with api.namespace(NAME) as namespace:
                    pods.follow(namespace)
                    windows += round_.run(namespace, outside)
        ratios = _report(log, windows, outside, time.monotonic() - started)
    return ratios


class Window:
    """One scenario of one round: its span and what the client did meanwhile."""

    def __init__(
        self, scenario: str, index: int, started: float, ended: float, client: traffic.Client
    ) -> None:
        self.scenario = scenario
        self.index = index
        self.started = started
        self.ended = ended
        self.operations = client.between(started, ended)
        self.stats = traffic.Stats.of(self.operations)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Round:
    """One repository, its client, and the four scenarios one after the other."""

    def __init__(
        self, api: kube.Kube, log: runlog.Log, index: int, args: argparse.Namespace
    ) -> None:
        self.api = api
        self.log = log
        self.index = index
        self.rounds = args.planned_rounds
        self.baseline_seconds = args.planned_baseline_seconds
        self.namespace = ""
        self.status_line = ""

    def run(self, namespace: str, outside: list[traffic.Operation]) -> list[Window]:
        self.namespace = namespace
        spec = {"maintenance": {"cordonedNodeGraceSeconds": CORDONED_GRACE}}
        started = time.monotonic()
        self.api.apply(namespace, kube.repository_manifest(NAME, spec))
        self._settle("the new repository")
        self._step(
            f"repository {namespace}/{NAME} Ready and in sync in {time.monotonic() - started:.1f} s"
        )
        with tempfile.TemporaryDirectory() as work:
            url = self.api.clone_url(namespace, NAME)
            client = traffic.Client(url, Path(work), report=self.log.operation)
            client.start()
            first = time.monotonic()
            try:
                client.wait_pushes(3)
                windows = [
                    self._baseline(client),
                    self._switchover(client),
                    self._roll(client),
                    self._drain(client),
                ]
                client.wait_pushes(3)
            finally:
                client.stop()
                self._events()
            lost = client.main_holds_last_acknowledged()
        if lost:
            self._step(f"an acknowledged push is missing at the end: {lost}")
            client.operations.append(traffic.Operation("fetch", first, first, False, lost))
        spans = [(w.started, w.ended) for w in windows]
        outside += [
            op
            for op in client.operations
            if op.started >= first and not any(op.started <= e and op.ended >= s for s, e in spans)
        ]
        return windows

    # -- the scenarios -----------------------------------------------------------------------

    def _baseline(self, client: traffic.Client) -> Window:
        started = time.monotonic()
        deadline = started + self.baseline_seconds
        # Polled, not slept: the status is logged as it goes, should anything change.
        kube.wait(
            f"{self.baseline_seconds:.0f} s of baseline traffic",
            lambda: self._status() is not None and time.monotonic() >= deadline,
            timeout=self.baseline_seconds + 60,
            interval=0.5,
        )
        return self._window("baseline", started, client, "nothing going on")

    def _switchover(self, client: traffic.Client) -> Window:
        before = self._status()
        started = time.monotonic()
        self._kubectl(
            "annotate", "gitrepositories.gitquorum.io", NAME, "gitquorum.io/switchover=any"
        )
        # The status names the successor before it takes office (it is Promoting, Ready is
        # False): the switchover ends when it takes writes, so pushes held meanwhile count.
        after = self._until(
            f"a leader other than {before['leader']} in office",
            lambda s: (
                s.get("leader") not in (None, before["leader"])
                and s.get("term", 0) > before["term"]
                and _in_office(s)
            ),
        )
        window = self._window(
            "switchover", started, client, f"leader {before['leader']} -> {after['leader']}"
        )
        kube.wait(
            "the switchover annotation removed",
            lambda: (
                "gitquorum.io/switchover" not in (self._body()["metadata"].get("annotations") or {})
            ),
            timeout=60,
        )
        self._settle("the switchover")
        return window

    def _roll(self, client: traffic.Client) -> Window:
        before = self._status()
        revision = before.get("updateRevision")
        patch = {"spec": {"resources": {"requests": {"cpu": f"{110 + self.index}m"}}}}
        started = time.monotonic()
        self._kubectl(
            "patch", "gitrepositories.gitquorum.io", NAME, "--type=merge", "-p", json.dumps(patch)
        )
        after = self._until(
            "every replica at a new revision, Updating False, in sync",
            lambda s: (
                s.get("updateRevision") not in (None, revision)
                and s.get("updatedReplicas") == 3
                and _condition(s, "Updating") == "False"
                and _in_sync(s)
            ),
        )
        return self._window(
            "roll",
            started,
            client,
            f"revision {revision} -> {after.get('updateRevision')}, leader {before['leader']} "
            f"-> {after['leader']}",
        )

    def _drain(self, client: traffic.Client) -> Window:
        before = self._status()
        leader = before["leader"]
        node = next(r["node"] for r in before["replicaStatuses"] if r["name"] == leader)
        started = time.monotonic()
        drain = subprocess.Popen(
            [
                *self.api.kubectl,
                "drain",
                node,
                "--delete-emptydir-data",
                "--ignore-daemonsets",
                f"--timeout={DRAIN_TIMEOUT}s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            after = self._until(
                f"a new leader and 3 replicas in sync, none on drained {node}",
                lambda s: (
                    s.get("leader") not in (None, leader)
                    and _in_sync(s)
                    and all(r.get("node") != node for r in s.get("replicaStatuses") or ())
                ),
            )
            window = self._window(
                "drain", started, client, f"{node} (leader {leader}) -> leader {after['leader']}"
            )
            output, _ = drain.communicate(timeout=DRAIN_TIMEOUT)
            self.log.write(f"kubectl drain {node} exited {drain.returncode}:\n{output}")
        finally:
            if drain.poll() is None:
                drain.kill()
                drain.wait()
            self._kubectl("uncordon", node)
        return window

    # -- helpers -----------------------------------------------------------------------------

    def _window(self, scenario: str, started: float, client: traffic.Client, what: str) -> Window:
        ended = time.monotonic()
        client.wait_past(ended)
        window = Window(scenario, self.index, started, ended, client)
        self._step(f"{scenario}: {what}, {window.seconds:.1f} s; {window.stats.line()}")
        if window.stats.failures:
            self._step(f"{scenario}: failed: {window.stats.failed_summary()}")
        return window

    def _step(self, text: str) -> None:
        self.log.step(f"round {self.index + 1}/{self.rounds} {text}")

    def _body(self) -> Body:
        return self.api.repository(self.namespace, NAME)

    def _status(self) -> Body:
        """The status, written to the log whenever its summary changes."""
        status: Body = self._body().get("status") or {}
        line = _summary(status)
        if line != self.status_line:
            self.log.write(f"status: {line}")
            self.status_line = line
        return status

    def _until(self, what: str, accept: Callable[[Body], bool]) -> Body:
        """The first status ``accept`` takes; on timeout the error shows the last one."""
        try:
            return kube.wait(
                f"{self.namespace}/{NAME}: {what}",
                lambda: (lambda s: s if accept(s) else None)(self._status()),
                timeout=CHANGE_TIMEOUT,
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}; the status: {self.status_line}") from error

    def _settle(self, after: str) -> None:
        started = time.monotonic()
        self._until(
            f"settled after {after}", lambda s: _in_sync(s) and _condition(s, "Ready") == "True"
        )
        self.log.write(f"settled after {after} in {time.monotonic() - started:.1f} s")

    def _kubectl(self, *args: str) -> None:
        result = subprocess.run(
            [*self.api.kubectl, *args, "-n", self.namespace],
            capture_output=True,
            text=True,
            check=False,
        )
        self.log.write(f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}".strip())
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {args[0]} failed: {result.stderr}")

    def _events(self) -> None:
        events = self.api.core.list_namespaced_event(self.namespace).items
        events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        self.log.write(
            "events:\n"
            + "\n".join(
                f"  {e.last_timestamp or e.event_time} {e.type} {e.reason} "
                f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}"
                for e in events
            )
        )


def _in_sync(status: Body) -> bool:
    """3 voting members, each serving and InSync at one generation and checksum."""
    entries = status.get("replicaStatuses") or []
    return (
        len(entries) == 3
        and len(status.get("members") or []) == 3
        and status.get("readyReplicas") == 3
        and all(e.get("state") == "InSync" and e.get("voter") for e in entries)
        and len({(e.get("generation"), e.get("checksum")) for e in entries}) == 1
    )


def _in_office(status: Body) -> bool:
    """The leader the status names takes writes: Ready, and its own entry InSync."""
    entry: Body = next(
        (e for e in status.get("replicaStatuses") or () if e.get("name") == status.get("leader")),
        {},
    )
    return _condition(status, "Ready") == "True" and entry.get("state") == "InSync"


def _condition(status: Body, kind: str) -> str:
    return kube.condition({"status": status}, kind)


def _summary(status: Body) -> str:
    conditions = ", ".join(
        f"{c.get('type')}={c.get('status')}({c.get('reason')})"
        for c in status.get("conditions") or []
    )
    replicas = "; ".join(
        f"{e.get('name')}@{e.get('node') or '-'} {e.get('role') or '-'} {e.get('state')} "
        f"gen={e.get('generation')} voter={e.get('voter')}"
        + (f" ({e['message']})" if e.get("message") else "")
        for e in status.get("replicaStatuses") or []
    )
    return (
        f"leader={status.get('leader')} term={status.get('term')} "
        f"ready={status.get('readyReplicas')} updated={status.get('updatedReplicas')} "
        f"revision={status.get('updateRevision')}; {conditions}; {replicas}"
    )


def _tree_state() -> str:
    """What code the operator and the replicas run: the testbed runs the working tree."""
    root = binaries.repo_root()
    head = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--oneline"], capture_output=True, text=True
    )
    changed = subprocess.run(
        ["git", "-C", str(root), "status", "--short", "operator"], capture_output=True, text=True
    )
    return f"tree: {head.stdout.strip()}\nuncommitted under operator/:\n{changed.stdout}"


def _report(
    log: runlog.Log, windows: list[Window], outside: list[traffic.Operation], wall: float
) -> dict[str, float]:
    stats = {
        scenario: traffic.Stats.of(
            op for w in windows if w.scenario == scenario for op in w.operations
        )
        for scenario in SCENARIOS
    }
    durations = {
        scenario: [w.seconds for w in windows if w.scenario == scenario] for scenario in SCENARIOS
    }
    log.step("summary (testbed on this machine; every round's windows together)")
    log.step(
        f"{'scenario':<11} {'rounds':>6} {'pushes':>6} {'fetches':>7} {'failed':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  duration s (each round)"
    )
    for scenario in SCENARIOS:
        s = stats[scenario]
        log.step(
            f"{scenario:<11} {len(durations[scenario]):>6} {s.pushes:>6} {s.fetches:>7} "
            f"{len(s.failures):>6} {s.p50 * 1000:>7.0f} {s.percentile(0.99) * 1000:>7.0f} "
            f"{s.maximum * 1000:>7.0f}  {', '.join(f'{d:.1f}' for d in durations[scenario])}"
        )
    for scenario in SCENARIOS:
        if stats[scenario].failures:
            log.step(f"failed in {scenario}: {stats[scenario].failed_summary()}")
    between = traffic.Stats.of(outside)
    log.step(f"outside the windows (settling): {between.line()}")
    if between.failures:
        log.step(f"failed outside the windows: {between.failed_summary()}")
    base = stats["baseline"]
    ratios: dict[str, float] = {}
    for scenario in SCENARIOS[1:]:
        ratios[f"{scenario}.p50"] = stats[scenario].p50 / base.p50
        ratios[f"{scenario}.max"] = stats[scenario].maximum / base.maximum
    for scenario in SCENARIOS:
        ratios[f"{scenario}.failed"] = float(len(stats[scenario].failures))
    ratios["roll.duration"] = max(durations["roll"]) / ROLL_TARGET
    ratios["switchover.latency"] = stats["switchover"].maximum / SWITCHOVER_TARGET
    log.step(
        f"longest roll {max(durations['roll']):.1f} s against the {ROLL_TARGET:.0f} s target; "
        f"switchover max push latency {stats['switchover'].maximum * 1000:.0f} ms against "
        f"{SWITCHOVER_TARGET * 1000:.0f} ms; wall time {wall:.0f} s; log {log.path}"
    )
    log.write("ratios: " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    return ratios
