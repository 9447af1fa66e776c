"""One run per run directory: a run holds ``<run_dir>/.lock`` for its lifetime, and a second one refuses to start.

The lock is an OS lock (``fcntl.flock``) on that file, not the file's existence: the kernel drops it when the
holding process ends, however it ends (a SIGKILL or an out-of-memory kill included), so a lock left behind by a
dead run never blocks the next one. The file also holds the holder's pid, host and start time, for the message.

Where ``fcntl`` is missing (Windows) the file itself is the lock (created with ``O_EXCL``), and one whose holder no
longer runs on this host is taken over.

Within one process runs follow each other (a notebook, tests calling a recipe's ``main()`` twice): starting a run
releases what an earlier run of the same process still held, so a run that raised never blocks the next one.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from hftransfer.errors import RunDirInUseError
from hftransfer.training.disk import writing

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

_held: dict[Path, RunLock] = {}


class RunLock:
    """The lock of one run directory, held by this process (see :func:`acquire`)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lock; return None, or the holder's record (pid, host, started) when another run holds it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        holder = self._lock_fcntl() if fcntl is not None else self._lock_exclusive()
        if holder is not None:
            return holder
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            with writing("the run lock", self.path):
                os.ftruncate(self._fd, 0)
                os.write(self._fd, (json.dumps(record) + "\n").encode())
        except BaseException:
            self.release()
            raise
        return None

    def _lock_fcntl(self) -> dict[str, Any] | None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return _read_holder(self.path)
            # A releasing holder unlinks the file before unlocking it: if this process opened the file just before
            # that, it now holds a lock on a file no longer at the path, which nobody else would see. Start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return None
            os.close(fd)

    def _lock_exclusive(self) -> dict[str, Any] | None:
        while True:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                return None
            except FileExistsError:
                holder = _read_holder(self.path)
                if holder.get("host") != socket.gethostname() or _alive(holder.get("pid")):
                    return holder
                self.path.unlink(missing_ok=True)  # its run ended without releasing it (killed)

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlinked first: see :meth:`_lock_fcntl`)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def _read_holder(path: Path) -> dict[str, Any]:
    # The holder may be between taking the lock and writing its record: an empty or partial file is no error.
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: assume it runs rather than take over a live run's directory
    import psutil  # an accelerate dependency; os.kill(pid, 0) would terminate the process on Windows

    return psutil.pid_exists(pid)


def in_use_message(run_dir: Path, holder: dict[str, Any]) -> str:
    """The one line a second run stops with."""
    pid, host, since = (holder.get(key, "?") for key in ("pid", "host", "started"))
    return (
        f"{run_dir} is in use by another run (pid {pid} on host {host} since {since}); wait for it to finish or "
        "stop it (see docs/reliability.md), or choose another output_dir"
    )


def acquire(run_dir: Path) -> str | None:
    """Lock ``run_dir`` for this process's run: None when taken, else the message saying who holds it.

    Call from one process (the main one). Locks that earlier runs of this process still hold are released first:
    a process runs one run at a time.
    """
    release_all()
    lock = RunLock(run_dir)
    holder = lock.try_acquire()
    if holder is not None:
        return in_use_message(run_dir, holder)
    _held[lock.run_dir.resolve()] = lock
    return None


def require(run_dir: Path) -> None:
    """:func:`acquire`, raising :class:`RunDirInUseError` when another run holds ``run_dir``."""
    message = acquire(run_dir)
    if message is not None:
        raise RunDirInUseError(message)


def release(run_dir: Path) -> None:
    """Release this process's lock on ``run_dir`` (nothing when it holds none); the end of a run."""
    lock = _held.pop(Path(run_dir).resolve(), None)
    if lock is not None:
        lock.release()


def release_all() -> None:
    """Release every lock this process holds (at exit, and before a new run starts)."""
    while _held:
        _held.popitem()[1].release()


def holds(run_dir: Path) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return Path(run_dir).resolve() in _held


def _forget_inherited() -> None:
    # A forked child (a DataLoader worker, a fork server's run) does not hold its parent's run directory: it must
    # not remove the parent's lock file when it ends or starts a run of its own. Closing its copies of the
    # descriptors leaves the parent's flock in place (the lock goes with the last descriptor) and lets the lock die
    # with the parent even while such a child lives on.
    for lock in _held.values():
        if lock._fd is not None:
            os.close(lock._fd)
            lock._fd = None
    _held.clear()


# The kernel drops flocks at exit anyway; this also removes the file, so a finished run leaves a clean directory.
atexit.register(release_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)
