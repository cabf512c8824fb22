"""Tests of resnet_jax.training.workdir_lock: one trainer per workdir, the holder named, no stale locks."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from resnet_jax.training import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_owner_is_refused_naming_the_holder(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirBusyError) as error:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  message = str(error.value)
  assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "\n" not in message
  with workdir_lock.WorkdirLock(str(tmp_path)):  # Released: free again.
    pass


def test_a_dead_holders_record_is_no_lock(tmp_path):
  """SIGKILL releases the flock; the record it leaves names a dead pid and blocks nothing."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from resnet_jax.training import workdir_lock; "
       f"workdir_lock.WorkdirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
       "time.sleep(60)"],
      stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(workdir_lock.WorkdirBusyError, match=f"pid {holder.pid} "):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid  # The stale record.
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  lock.release()


@pytest.mark.parametrize("holder", ["dead_pid_here", "live_pid_here", "other_host"])
def test_without_flock_the_record_decides(tmp_path, monkeypatch, holder):
  """Some network file systems have no flock: a dead holder on this host is stale (replaced), a live
  one or one on another host (which only a person can check) is refused."""
  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(workdir_lock.fcntl, "flock", no_flock)
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  record = {"dead_pid_here": {"pid": int(dead), "host": socket.gethostname()},
            "live_pid_here": {"pid": os.getppid(), "host": socket.gethostname()},
            "other_host": {"pid": os.getpid() + 1, "host": "elsewhere.example"}}[holder]
  (tmp_path / ".lock").write_text(json.dumps(dict(record, started="2026-01-01T00:00:00+00:00")))
  if holder == "dead_pid_here":
    workdir_lock.WorkdirLock(str(tmp_path)).acquire().release()
  else:
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"pid {record['pid']} on {record['host']}.*no flock"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == record["pid"]  # Left as it was.
