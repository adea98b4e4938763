"""The invariants' checker: proves from the clients' records and the replicas' final state the
invariants of DESIGN.md ("Replication: the invariants"), and names what broke:

- no acknowledged push is lost: every acknowledged commit is in its branch on every in-sync
  replica at the end;
- no ref goes backwards: a client's successive reads of a branch are fast-forwards (clients
  only push fast-forwards), every value read survives to the end, and a read that started
  after a push was acknowledged (to this client or to any: the leader acknowledges only once
  no replica can serve the older state) shows that push;
- the replicas converge: identical generation, checksum and refs on disk;
- every ref transaction was decided once: no two acknowledged pushes of a branch share an
  old value.

Ancestry questions are answered from git's own commit graph (``git rev-list --parents``) in a
checker repository that borrows the objects of every client clone (``objects/info/
alternates``), so that even a commit no replica holds any more can be placed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
from typing import Any

from gitquorum.replication import checksum
from tests.faults.clients import ZERO_ID, Acknowledgement, Observation, Workload, elapsed
from tests.faults.gitcli import Git
from tests.faults.localcluster import STATE_TIMEOUT, LocalCluster

REPORTED = 15
"""Problems of one kind printed in full; the rest are counted."""
ALARMS = ("refs differ from the leader's", "does not apply here")
"""What a replica logs when it finds itself diverged from the leader and starts a repair.
With the invariants intact no replica diverges, so each line is worth a look. They are
reported, not failed on: today a follower also logs one when a heartbeat that left the
leader before a commit is handled after the follower applied that commit (a false alarm,
followed by a needless copy of the leader's state)."""


class Ancestry:
    """The commit graph of a repository, loaded once with ``git rev-list --parents``."""

    def __init__(self, git: Git, repository: pathlib.Path, commits: set[str]) -> None:
        listed = "\n".join(sorted(commits)) + "\n"
        checked = subprocess.run(
            ["git", "cat-file", "--batch-check=%(objectname) %(objecttype)"],
            cwd=repository,
            env=git.env,
            input=listed,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        present = [line.split()[0] for line in checked.splitlines() if line.endswith(" commit")]
        self.missing = commits - set(present)
        self.parents: dict[str, list[str]] = {}
        if present:
            graph = subprocess.run(
                ["git", "rev-list", "--parents", "--stdin"],
                cwd=repository,
                env=git.env,
                input="\n".join(present) + "\n",
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for line in graph.splitlines():
                commit, *parents = line.split()
                self.parents[commit] = parents
        self._ancestors: dict[str, frozenset[str]] = {}

    def ancestors(self, commit: str) -> frozenset[str]:
        """The commit and everything it descends from."""
        if commit in self._ancestors:
            return self._ancestors[commit]
        found: set[str] = set()
        stack = [commit]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            if current in self._ancestors:
                found |= self._ancestors[current]
                continue
            found.add(current)
            stack.extend(self.parents.get(current, ()))
        self._ancestors[commit] = frozenset(found)
        return self._ancestors[commit]

    def contains(self, descendant: str | None, ancestor: str) -> bool:
        """Whether ``descendant`` (None: an absent ref) is ``ancestor`` or descends from it."""
        return descendant is not None and ancestor in self.ancestors(descendant)


@dataclasses.dataclass
class Verdict:
    """What the checker found, by invariant."""

    acknowledged: int = 0
    observations: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    """(a) acknowledged pushes missing from a replica's final state."""
    regressions: list[str] = dataclasses.field(default_factory=list)
    """(b) a read going backwards, or a value read that did not survive."""
    stale_reads: list[str] = dataclasses.field(default_factory=list)
    """(b) a read older than a push acknowledged before it started."""
    divergence: list[str] = dataclasses.field(default_factory=list)
    """(c) replicas that did not converge to one generation, checksum and ref state."""
    conflicts: list[str] = dataclasses.field(default_factory=list)
    """(d) two acknowledged updates of one branch from the same old value."""
    client_errors: list[str] = dataclasses.field(default_factory=list)
    alarms: list[str] = dataclasses.field(default_factory=list)
    """Replica log lines that claim a divergence; reported, not failed on (see ALARMS)."""
    timeline: str = ""

    @property
    def lost_pushes(self) -> int:
        return len({line.split(" | ")[0] for line in self.lost})

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.regressions
            or self.stale_reads
            or self.divergence
            or self.conflicts
            or self.client_errors
        )

    def summary(self) -> str:
        return (
            f"{self.acknowledged} acknowledged pushes, {self.observations} observations; "
            f"lost pushes {self.lost_pushes}, regressions {len(self.regressions)}, "
            f"stale reads {len(self.stale_reads)}, conflicting acknowledgements "
            f"{len(self.conflicts)}, divergence {len(self.divergence)}, "
            f"client errors {len(self.client_errors)}; divergence alarms in replica logs "
            f"{len(self.alarms)}"
        )

    def describe(self) -> str:
        parts = [self.summary()]
        for title, problems in (
            ("(a) acknowledged pushes lost", self.lost),
            ("(b) refs that went backwards", self.regressions),
            ("(b) reads older than an acknowledged push", self.stale_reads),
            ("(c) replicas that did not converge", self.divergence),
            ("(d) one ref transaction acknowledged twice", self.conflicts),
            ("client errors", self.client_errors),
            ("divergence alarms in replica logs (not failed on)", self.alarms),
        ):
            if problems:
                parts.append(f"{title}: {len(problems)}")
                parts += [f"  - {problem}" for problem in problems[:REPORTED]]
                if len(problems) > REPORTED:
                    parts.append(f"  ... and {len(problems) - REPORTED} more")
        if self.timeline:
            parts.append("timeline (since the workload started):\n" + self.timeline)
        return "\n".join(parts)

    def assert_ok(self) -> None:
        assert self.ok, "replication invariants broken:\n" + self.describe()


class Checker:
    """Checks the invariants over a workload's records and the replicas' final state.

    It may run several times over one workload (after each round of faults). What depends
    on the final state is checked again each time; what depends only on the records (the
    order of one client's reads, reads after acknowledged pushes) is checked once per
    observation, and its findings are kept.
    """

    def __init__(self, cluster: LocalCluster, workload: Workload) -> None:
        self.cluster = cluster
        self.workload = workload
        self.records = workload.records
        self.git = workload.git
        self.repository = cluster.directory / "checker.git"
        self._checked = 0
        """Observations already checked for order and staleness."""
        self._newest: dict[str, dict[str, tuple[str, Observation]]] = {}
        """Per client, per branch: the newest value it read, and where."""
        self._regressions: list[str] = []
        self._stale_reads: list[str] = []

    def check(self, *, timeout: float = STATE_TIMEOUT) -> Verdict:
        """Waits for the replicas to converge (the scenario has ended), then checks."""
        records = self.records
        verdict = Verdict(
            acknowledged=len(records.acknowledgements),
            observations=len(records.observations),
            timeline=records.timeline(),
        )
        in_sync = self._converge(verdict, timeout)
        finals = {replica: self._refs_on_disk(replica) for replica in in_sync}
        self._compare_finals(verdict, finals, in_sync)
        ancestry = self._ancestry(finals)
        self._check_acknowledged(verdict, ancestry, finals)
        self._check_new_observations(ancestry)
        verdict.regressions += self._regressions
        verdict.stale_reads += self._stale_reads
        self._check_reads_survive(verdict, ancestry, finals)
        self._check_decided_once(verdict)
        verdict.client_errors = list(records.errors)
        verdict.alarms = self._alarms()
        return verdict

    def _alarms(self) -> list[str]:
        found = []
        for name, log in self.cluster.replica_logs():
            for line in log.read_text(errors="replace").splitlines():
                if any(alarm in line for alarm in ALARMS):
                    found.append(f"{name}: {line}")
        return found

    def _t(self, moment: float) -> str:
        return elapsed(self.records.origin, moment)

    # (c) convergence ------------------------------------------------------------------------

    def _converge(self, verdict: Verdict, timeout: float) -> dict[str, dict[str, Any]]:
        """The statuses of the in-sync replicas, once all converged or the deadline passed."""
        try:
            return self.cluster.wait_converged(timeout=timeout)
        except AssertionError as error:
            verdict.divergence.append(str(error))
        return {
            replica: status
            for replica, status in self.cluster.statuses().items()
            if isinstance(status, dict) and status.get("state") == "InSync"
        }

    def _refs_on_disk(self, replica: str) -> dict[str, str]:
        output = self.git.out(
            # A replica's volume belongs to the replica's user (a pod's fsGroup), not to us.
            "-c",
            "safe.directory=*",
            "--git-dir",
            str(self.cluster.repository(replica)),
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/",
        )
        refs = {}
        for line in output.splitlines():
            object_id, _, ref = line.partition(" ")
            refs[ref] = object_id
        return refs

    def _compare_finals(
        self,
        verdict: Verdict,
        finals: dict[str, dict[str, str]],
        statuses: dict[str, dict[str, Any]],
    ) -> None:
        for replica, refs in finals.items():
            on_disk = checksum.of(refs)
            if on_disk != statuses[replica]["checksum"]:
                verdict.divergence.append(
                    f"{replica} reports checksum {statuses[replica]['checksum'][:12]} at "
                    f"generation {statuses[replica]['generation']}, its refs on disk give "
                    f"{on_disk[:12]}"
                )
        names = sorted(finals)
        for replica in names[1:]:
            first = finals[names[0]]
            other = finals[replica]
            differing = sorted(
                ref for ref in first.keys() | other.keys() if first.get(ref) != other.get(ref)
            )
            for ref in differing:
                verdict.divergence.append(
                    f"{ref} is {first.get(ref, '(absent)')[:12]} on {names[0]} "
                    f"but {other.get(ref, '(absent)')[:12]} on {replica}"
                )

    # ancestry -------------------------------------------------------------------------------

    def _ancestry(self, finals: dict[str, dict[str, str]]) -> Ancestry:
        """A repository holding every commit any client made, and the leader's refs."""
        if not self.repository.exists():
            self.git.out("init", "-q", "--bare", str(self.repository))
        alternates = self.repository / "objects" / "info" / "alternates"
        alternates.write_text("".join(f"{path}\n" for path in self.workload.object_stores))
        leader, _ = self.cluster.leader()
        fetched = self.git.run(
            "fetch",
            "-q",
            "--no-tags",
            self.cluster.url(leader),
            "+refs/*:refs/leader/*",
            cwd=self.repository,
            timeout=60,
        )
        if not fetched.ok:
            self.records.error(f"checker: fetch from the leader failed: {fetched.stderr.strip()}")
        commits = {a.new for a in self.records.acknowledgements}
        commits |= {a.old for a in self.records.acknowledgements if a.old != ZERO_ID}
        for observation in self.records.observations:
            commits |= set(observation.refs.values())
        for refs in finals.values():
            commits |= set(refs.values())
        ancestry = Ancestry(self.git, self.repository, commits)
        for commit in sorted(ancestry.missing):
            self.records.error(f"checker: commit {commit} is in no client's clone")
        return ancestry

    # (a) every acknowledged push is present -------------------------------------------------

    def _check_acknowledged(
        self, verdict: Verdict, ancestry: Ancestry, finals: dict[str, dict[str, str]]
    ) -> None:
        for ack in self.records.acknowledgements:
            for replica, refs in finals.items():
                final = refs.get(f"refs/heads/{ack.branch}")
                if not ancestry.contains(final, ack.new):
                    verdict.lost.append(
                        f"{ack.client} {ack.branch} {ack.new[:12]} | pushed "
                        f"{ack.old[:12]}..{ack.new[:12]} via {ack.replica}, acknowledged at "
                        f"{self._t(ack.ended)} (started {self._t(ack.started)}); {replica} ends "
                        f"with {ack.branch} at {(final or '(absent)')[:12]}, which lacks it"
                    )

    # (b) no ref went backwards, and reads follow acknowledged writes -------------------------

    def _check_new_observations(self, ancestry: Ancestry) -> None:
        """Each client's reads in order, and each read against the pushes acknowledged before.

        A client records its observations one after the other, so the records hold each
        client's in the order it made them; every push acknowledged before a read started is
        recorded by the time the clients have stopped.
        """
        acknowledgements: dict[str, list[Acknowledgement]] = {}
        for ack in self.records.acknowledgements:
            acknowledgements.setdefault(ack.branch, []).append(ack)
        observations = self.records.observations[self._checked :]
        self._checked += len(observations)
        for observation in observations:
            self._check_order(ancestry, observation)
            for branch, acks in sorted(acknowledgements.items()):
                self._check_read_after_writes(ancestry, observation, branch, acks)

    def _check_order(self, ancestry: Ancestry, observation: Observation) -> None:
        newest = self._newest.setdefault(observation.client, {})
        for branch, (value, earlier) in sorted(newest.items()):
            now = observation.refs.get(branch)
            if not ancestry.contains(now, value):
                self._regressions.append(
                    f"{observation.client} read {branch} at {value[:12]} from {earlier.replica} "
                    f"({self._t(earlier.started)}-{self._t(earlier.ended)}), then at "
                    f"{(now or '(absent)')[:12]} from {observation.replica} "
                    f"({self._t(observation.started)}-{self._t(observation.ended)})"
                )
        for branch, value in observation.refs.items():
            newest[branch] = (value, observation)

    def _check_read_after_writes(
        self,
        ancestry: Ancestry,
        observation: Observation,
        branch: str,
        acks: list[Acknowledgement],
    ) -> None:
        value = observation.refs.get(branch)
        missed = [
            ack
            for ack in acks
            if ack.ended < observation.started and not ancestry.contains(value, ack.new)
        ]
        if not missed:
            return
        ack = max(missed, key=lambda a: a.ended)
        whose = "its own" if ack.client == observation.client else f"{ack.client}'s"
        self._stale_reads.append(
            f"{observation.client} read {branch} at {(value or '(absent)')[:12]} from "
            f"{observation.replica} ({self._t(observation.started)}-"
            f"{self._t(observation.ended)}) after {whose} push of {ack.new[:12]} via "
            f"{ack.replica} was acknowledged at {self._t(ack.ended)}"
            + (f" ({len(missed)} acknowledged pushes missed)" if len(missed) > 1 else "")
        )

    def _check_reads_survive(
        self, verdict: Verdict, ancestry: Ancestry, finals: dict[str, dict[str, str]]
    ) -> None:
        """A value a replica served was decided: every in-sync replica must end with it."""
        for observation in self.records.observations:
            for branch, value in sorted(observation.refs.items()):
                for replica, refs in finals.items():
                    final = refs.get(f"refs/heads/{branch}")
                    if not ancestry.contains(final, value):
                        verdict.regressions.append(
                            f"{observation.client} read {branch} at {value[:12]} from "
                            f"{observation.replica} ({self._t(observation.started)}-"
                            f"{self._t(observation.ended)}); {replica} ends with "
                            f"{(final or '(absent)')[:12]}, which lacks it"
                        )

    # (d) one decision per ref transaction ---------------------------------------------------

    def _check_decided_once(self, verdict: Verdict) -> None:
        decided: dict[tuple[str, str], Acknowledgement] = {}
        for ack in sorted(self.records.acknowledgements, key=lambda a: a.ended):
            first = decided.setdefault((ack.branch, ack.old), ack)
            if first.new != ack.new:
                verdict.conflicts.append(
                    f"{ack.branch} from {ack.old[:12]}: {first.client} was acknowledged "
                    f"{first.new[:12]} via {first.replica} at {self._t(first.ended)}, "
                    f"{ack.client} {ack.new[:12]} via {ack.replica} at {self._t(ack.ended)}"
                )
