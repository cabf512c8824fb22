"""The owner of a training workdir: one trainer at a time, held through WORKDIR/.lock.

The lock is an exclusive `flock` on WORKDIR/.lock, held by an open file for the whole run; the
kernel releases it when the process ends however it ends (SIGKILL included), so a dead trainer
never leaves a stale lock behind. The file also records the holder (pid, host, start time), which
the refusal message names. On a file system without `flock` the record alone decides: a holder on
this host whose pid is gone is stale and replaced; one on another host is refused (only a person
can tell whether it still runs).

Multi-host runs share one workdir: only process 0 takes the lock (a lock per process would make
the processes of one run refuse each other), and its verdict is broadcast, so every process of a
second run stops with the same message.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
from typing import Optional

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
  """Another trainer holds the workdir."""


def _holder_text(record: dict) -> str:
  return (f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started "
          f"{record.get('started', '?')}")


def _read_record(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    record = json.loads(os.read(fd, 4096).decode() or "{}")
  except (ValueError, UnicodeDecodeError):
    return {}
  return record if isinstance(record, dict) else {}


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (ProcessLookupError, ValueError, TypeError):
    return False
  except PermissionError:  # Alive, someone else's.
    return True
  return True


class WorkdirLock:
  """Held while a trainer owns `workdir`; `release` (or process exit) frees it."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._fd: Optional[int] = None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock or raises WorkdirBusyError naming the holder; never waits."""
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      self._lock(fd)
      record = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(record).encode(), 0)
      os.fsync(fd)
    except BaseException:
      os.close(fd)
      raise
    self._fd = fd
    return self

  def _lock(self, fd: int) -> None:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return
    except BlockingIOError:
      record = _read_record(fd)
      hint = ""
      if record.get("host") == socket.gethostname() and not _pid_alive(record.get("pid")):
        # Only a process that inherited the open lock file (a forked child) can still hold it.
        hint = f" (that pid has exited; a child of it still holds {self.path}: see `fuser {self.path}`)"
      raise WorkdirBusyError(f"{os.path.dirname(self.path)} is in use by another trainer: "
                             f"{_holder_text(record)}{hint}; wait for it to finish or use another "
                             "--workdir") from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise
    # No flock here (some network or FUSE file systems): the holder's record decides.
    record = _read_record(fd)
    if record and record.get("pid") != os.getpid():
      same_host = record.get("host") == socket.gethostname()
      if not same_host or _pid_alive(record.get("pid")):
        raise WorkdirBusyError(
            f"{os.path.dirname(self.path)} is in use by another trainer: {_holder_text(record)} "
            f"(this file system has no flock; if that run has ended, delete {self.path})")

  def release(self) -> None:
    # The file stays: unlinking it could let a waiting process lock an inode no one else sees.
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)  # Closing the last descriptor drops the flock.
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def own(workdir: str) -> Optional[WorkdirLock]:
  """Makes this run the workdir's owner: process 0 takes the lock, every process learns the verdict.

  Returns:
    The held lock on process 0, None on the others.

  Raises:
    WorkdirBusyError: on every process, when another trainer holds the workdir.
  """
  import jax
  if jax.process_count() == 1:
    return WorkdirLock(workdir).acquire()
  from jax.experimental import multihost_utils
  import numpy as np
  lock, message = None, ""
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir).acquire()
    except WorkdirBusyError as e:
      message = str(e)
  # A fixed-size byte buffer: broadcast needs the same shape on every process.
  buffer = np.zeros(1024, np.uint8)
  encoded = message.encode()[:1024]
  buffer[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  verdict = bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).rstrip(b"\0").decode()
  if verdict:
    raise WorkdirBusyError(verdict)
  return lock
