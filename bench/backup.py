"""Backups and restores with gitquorum's library against plain git and plain boto3.

Everything runs on this machine: the generated repository (see ``repository``), cloned bare as
the live repository, and a real versitygw on loopback as the object store
(``tests.objectstore.running``). Each measurement is repeated ``--backup-rounds`` times,
alternating ours and the reference and swapping which goes first each round, so that a warm
cache favours neither; the median counts.

- backup: ours is ``bundling.create`` of a snapshot of every ref (in its scratch repository
  over the live one's objects, verified by git), ``ObjectStore.upload`` of the bundle and
  ``put_bytes`` of the manifest, as a replica makes a full backup; the reference is
  ``git bundle create --all`` in the live repository and a plain boto3 ``upload_file`` of it
  to the same store;
- incremental: after 10 small pushes (one small file each), the size of our incremental
  bundle (excluding the full backup's ref tips) against the full bundle's;
- restore: the full bundle, downloaded once with ``ObjectStore.download`` (timed apart, for
  both alike), then ``restoring.assemble`` (sha256 and header check, unbundle, refs, ``git
  fsck --full``) against ``git clone --mirror`` of the same file.

Each step prints one line; command output goes to a log file under bench/results/, whose path
is printed first. The human summary is reference / ours (higher is better); the ratios handed
to ``python -m bench`` are ours / reference (lower is better), like every other benchmark's.
"""

import argparse
import asyncio
import datetime
import functools
import os
import pathlib
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import boto3
import botocore.config

from bench import repository, runlog
from gitquorum.backup import bundling, layout, manifests, objectstore, restoring
from gitquorum.replication import checksum
from gitquorum.server import settings, spawning
from tests import objectstore as test_objectstore

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

NAMESPACE = "bench"
REPOSITORY = "repo"
PUSHES = 10
BACKUP_TARGET = 0.5
"""Reference time / ours for a full backup and for a restore: ours at least half as fast."""
INCREMENTAL_TARGET = 0.01
"""Incremental bundle bytes / full bundle bytes after 10 small pushes."""
MIB = 1024 * 1024
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backup")
    group.add_argument(
        "--backup-rounds",
        type=int,
        default=3,
        help="repetitions of each backup and restore measurement (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = RESULTS / f"backup-{stamp}"
    directory.mkdir(parents=True)
    with (
        runlog.Log(directory / "backup.log", started) as log,
        tempfile.TemporaryDirectory(prefix="gitquorum-bench-") as temporary,
    ):
        log.step(f"full log in {log.path}")
        work = pathlib.Path(temporary)
        bench = Bench(log, work, rounds=args.backup_rounds)
        generated = repository.ensure(repository.Shape(), bench.env)
        log.step(
            f"repository: {generated.objects} objects, {generated.pack_bytes / MIB:.1f} MiB packed"
        )
        bench.git("clone", "-q", "--bare", "--local", str(generated.path), str(bench.live))
        with test_objectstore.running(work / "s3") as endpoint:
            log.step(f"versitygw on {endpoint.endpoint}, bucket {endpoint.bucket}")
            ratios = bench.measure(endpoint)
        log.write(f"wall time {time.monotonic() - started:.0f} s")
    return ratios


class Bench:
    """The live repository, the runner, and the measurements one after the other."""

    def __init__(self, log: runlog.Log, work: pathlib.Path, *, rounds: int) -> None:
        self.log = log
        self.work = work
        self.rounds = rounds
        self.live = work / "live.git"
        home = work / "home"
        home.mkdir()
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "Bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "Bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
            "LANG": "C",
        }
        # As the replica builds its runner (commands/replica.py), less the push hook's config.
        self.runner = spawning.GitRunner(
            settings.GitOptions(), settings.Limits(), environment={**os.environ, **self.env}
        )
        self._scratches = 0

    def measure(self, endpoint: test_objectstore.ObjectStoreEndpoint) -> dict[str, float]:
        location = objectstore.Location(
            endpoint=endpoint.endpoint,
            bucket=endpoint.bucket,
            prefix=layout.repository_prefix(NAMESPACE, "default", REPOSITORY),
            access_key=endpoint.access_key,
            secret_key=endpoint.secret_key,
        )
        store = objectstore.ObjectStore(location)
        plain = boto3.client(
            "s3",
            endpoint_url=endpoint.endpoint,
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            region_name=test_objectstore.REGION,
            # A loopback address has no bucket subdomains: path-style is the only choice.
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

        ours: list[float] = []
        reference: list[float] = []
        full: manifests.Manifest | None = None
        for index in range(self.rounds):
            # Alternate which goes first, so a warm page cache favours neither.
            order = ("ours", "reference") if index % 2 == 0 else ("reference", "ours")
            for who in order:
                if who == "ours":
                    seconds, made = _timed(lambda: self._back_up(store, base=None))
                    ours.append(seconds)
                    assert made.bundle is not None
                    size = made.bundle.size
                    full = made
                else:
                    seconds, size = _timed(
                        functools.partial(self._plain_backup, plain, endpoint, index)
                    )
                    reference.append(seconds)
                self._clean()
                self.log.step(
                    f"backup round {index + 1}/{self.rounds} {who}: {seconds:.2f} s, "
                    f"bundle {size / MIB:.1f} MiB"
                )
        assert full is not None and full.bundle is not None
        backup_ratio = statistics.median(reference) / statistics.median(ours)
        self.log.step(
            f"backup median: ours {statistics.median(ours):.2f} s, "
            f"reference {statistics.median(reference):.2f} s"
        )

        self._push_small_commits()
        sizes: list[int] = []
        for index in range(self.rounds):
            seconds, incremental = _timed(lambda: self._back_up(store, base=full))
            assert incremental.bundle is not None
            sizes.append(incremental.bundle.size)
            self._clean()
            self.log.step(
                f"incremental round {index + 1}/{self.rounds}: {seconds:.2f} s, "
                f"bundle {incremental.bundle.size} bytes, "
                f"{len(incremental.bundle.prerequisites)} prerequisites"
            )
        incremental_ratio = statistics.median(sizes) / full.bundle.size

        downloaded = self.work / "downloaded.bundle"
        key = full.bundle.key
        seconds, _ = _timed(lambda: store.download(key, downloaded))
        self.log.step(
            f"download of the full bundle with ObjectStore.download: {seconds:.2f} s "
            "(not in the restore times)"
        )
        ours = []
        reference = []
        for index in range(self.rounds):
            order = ("ours", "reference") if index % 2 == 0 else ("reference", "ours")
            for who in order:
                if who == "ours":
                    seconds, _ = _timed(lambda: self._restore(full, downloaded))
                    ours.append(seconds)
                else:
                    seconds, _ = _timed(lambda: self._plain_restore(downloaded))
                    reference.append(seconds)
                self._clean()
                self.log.step(f"restore round {index + 1}/{self.rounds} {who}: {seconds:.2f} s")
        restore_ratio = statistics.median(reference) / statistics.median(ours)
        self.log.step(
            f"restore median: ours {statistics.median(ours):.2f} s, "
            f"reference {statistics.median(reference):.2f} s"
        )
        self.log.step(
            f"backup {backup_ratio:.2f}x of reference (target >= {BACKUP_TARGET}x), "
            f"incremental {incremental_ratio * 100:.3f}% of full "
            f"(target < {INCREMENTAL_TARGET * 100:.0f}%), "
            f"restore {restore_ratio:.2f}x (target >= {BACKUP_TARGET}x)"
        )
        return {
            "backup.time": 1 / backup_ratio,
            "incremental.bytes": incremental_ratio,
            "restore.time": 1 / restore_ratio,
        }

    # -- ours ---------------------------------------------------------------------------------

    def _back_up(
        self, store: objectstore.ObjectStore, *, base: manifests.Manifest | None
    ) -> manifests.Manifest:
        """A backup as the replica makes it: bundle, upload, manifest last."""
        snapshot = bundling.Snapshot(
            generation=self._scratches,
            head=self.git("symbolic-ref", "HEAD", cwd=self.live).strip(),
            refs=self._refs(),
        )
        scratch = self._scratch("backup")
        bundle = asyncio.run(
            bundling.create(
                self.runner,
                repository=self.live,
                snapshot=snapshot,
                scratch=scratch,
                exclude=base.refs.values() if base else (),
            )
        )
        if bundle is None:
            raise RuntimeError("bundling.create made no bundle: nothing new in the repository")
        created = datetime.datetime.now(datetime.UTC)
        backup_id = layout.new_backup_id(created, secrets.token_hex(4))
        prefix = store.location.prefix
        key = layout.bundle_key(prefix, backup_id)
        store.upload(key, bundle.path)
        manifest = manifests.Manifest(
            id=backup_id,
            namespace=NAMESPACE,
            repository=REPOSITORY,
            created=created,
            generation=snapshot.generation,
            head=snapshot.head,
            refs=dict(snapshot.refs),
            checksum=checksum.of(snapshot.refs),
            kind="incremental" if base else "full",
            base=base.id if base else None,
            bundle=manifests.BundleFile(key, bundle.size, bundle.sha256, bundle.prerequisites),
        )
        store.put_bytes(layout.manifest_key(prefix, backup_id), manifest.to_json())
        return manifest

    def _restore(self, manifest: manifests.Manifest, path: pathlib.Path) -> list[pathlib.Path]:
        scratch = self._scratch("restore") / "restored.git"
        return asyncio.run(
            restoring.assemble(
                self.runner, scratch=scratch, bundles=[(manifest, path)], target=manifest
            )
        )

    # -- the reference ------------------------------------------------------------------------

    def _plain_backup(
        self, client: "S3Client", endpoint: test_objectstore.ObjectStoreEndpoint, index: int
    ) -> int:
        path = self._scratch("plain-backup") / "x.bundle"
        self.git("bundle", "create", "--quiet", str(path), "--all", cwd=self.live)
        client.upload_file(str(path), endpoint.bucket, f"reference/{index}/{path.name}")
        return path.stat().st_size

    def _plain_restore(self, path: pathlib.Path) -> None:
        target = self._scratch("plain-restore") / "restored.git"
        self.git("clone", "-q", "--mirror", str(path), str(target))

    # -- helpers ------------------------------------------------------------------------------

    def _push_small_commits(self) -> None:
        clone = self.work / "pusher"
        self.git("clone", "-q", str(self.live), str(clone))
        started = time.monotonic()
        for number in range(PUSHES):
            (clone / f"small-{number}.txt").write_text(f"small change {number}\n")
            self.git("add", f"small-{number}.txt", cwd=clone)
            self.git("commit", "-q", "-m", f"small change {number}", cwd=clone)
            self.git("push", "-q", "origin", "HEAD", cwd=clone)
        self.log.step(
            f"{PUSHES} small pushes to the live repository in {time.monotonic() - started:.1f} s"
        )

    def _refs(self) -> dict[str, str]:
        output = self.git("for-each-ref", "--format=%(objectname) %(refname)", cwd=self.live)
        pairs = (line.split(" ", 1) for line in output.splitlines())
        return {name: oid for oid, name in pairs}

    def _scratch(self, what: str) -> pathlib.Path:
        """A new directory under ``scratch``, which :meth:`_clean` empties between timings."""
        self._scratches += 1
        path = self.work / "scratch" / f"{what}-{self._scratches}"
        path.mkdir(parents=True)
        return path

    def _clean(self) -> None:
        """Removes the scratch directories (outside every timing), to spare the disk."""
        shutil.rmtree(self.work / "scratch", ignore_errors=True)

    def git(self, *args: str, cwd: pathlib.Path | None = None) -> str:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True, check=False
        )
        self.log.write(f"git {' '.join(args)} exited {result.returncode} {result.stderr}".strip())
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout


T = TypeVar("T")


def _timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result
