"""One run per run directory: ``<run_dir>/run.lock``, created with O_EXCL and holding its owner's pid.

A lock whose owner is gone is taken over: a dead pid on this host, or an earlier incarnation of this very
SLURM job (a requeued job restarts, possibly on another node, with the same job id). A lock held by a
live process, or by another host we cannot check, is refused with a message naming the owner.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from unlearnkit.errors import UnlearnkitError

LOCK_NAME = "run.lock"
HALF_WRITTEN_GRACE_S = 10.0


class RunDirectoryBusy(UnlearnkitError):
    """Another live process holds the run directory's lock."""


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """``acquire()`` the lock of ``run_dir`` (raises ``RunDirectoryBusy``), ``release()`` it when the run ends."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _create(self, path: Path) -> bool:
        """Create ``path`` exclusively with our owner record; False if it already exists."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        record = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": _slurm_job()}
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.write("\n")
        return True

    @staticmethod
    def _owner(path: Path) -> dict | None:
        """The owner record of a lock file; None if it vanished; ``{}`` if it is unreadable (half written)."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(text)
        except ValueError:
            return {}
        return owner if isinstance(owner, dict) else {}

    def _is_stale(self, owner: dict, path: Path) -> bool:
        if not owner:  # unreadable: only a process killed between creating and writing it leaves one behind
            try:
                return time.time() - path.stat().st_mtime > HALF_WRITTEN_GRACE_S
            except FileNotFoundError:
                return True
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return owner["pid"] != os.getpid() and not _pid_alive(owner["pid"])
        # another machine: only an earlier incarnation of this same (requeued) SLURM job is known to be over
        return bool(owner.get("slurm_job")) and owner.get("slurm_job") == _slurm_job()

    def _describe(self, owner: dict) -> str:
        if not owner:
            return f"run directory {self.path.parent} is locked ({self.path} is being written or is damaged)"
        return (f"run directory {self.path.parent} is in use by process {owner.get('pid')} on "
                f"{owner.get('host')}: wait for that run to end, or choose another --run_dir "
                f"(if that process is gone, delete {self.path})")

    def acquire(self) -> RunLock:
        for _ in range(3):
            if self._create(self.path):
                self.held = True
                return self
            owner = self._owner(self.path)
            if owner is None:
                continue  # released meanwhile: try again
            if not self._is_stale(owner, self.path):
                raise RunDirectoryBusy(self._describe(owner))
            self._take_over(owner)
        raise RunDirectoryBusy(self._describe(self._owner(self.path) or {}))

    def _take_over(self, stale: dict) -> None:
        """Remove a stale lock; a second lock file makes sure only one process removes it."""
        guard = self.path.with_name(LOCK_NAME + ".takeover")
        if not self._create(guard):
            owner = self._owner(guard)
            if owner is None or not self._is_stale(owner, guard):
                raise RunDirectoryBusy(self._describe(self._owner(self.path) or {}))
            guard.unlink(missing_ok=True)  # left behind by a process killed while taking over
            if not self._create(guard):
                raise RunDirectoryBusy(self._describe(self._owner(self.path) or {}))
        try:
            if self._owner(self.path) == stale:  # still the same stale lock, not a new owner's
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process holds it (forked children never release their parent's)."""
        if self.held:
            owner = self._owner(self.path)
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
