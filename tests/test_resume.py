"""Killing training (SIGKILL) at any step or during a checkpoint write, then restarting, gives the
parameters of a run never interrupted; a half-written checkpoint is never resumed from. Random
kills plus damaged checkpoints end the same way; a second trainer and another model are refused.

"Bit-exact" holds for one machine and software stack, with XLA:CPU's threading pinned (the
XLA_FLAGS below): its multi-threaded Eigen kernels may split reductions differently under load.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import chex
import pytest

from resnet_jax.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 24, 4

# Runs train.py, but SIGKILLs itself inside Orbax's commit of a given checkpoint: `commit` is the
# final rename of the step directory (all items written); `items` is the rename of the 'state'
# item, with other items of the step possibly still being written.
KILLER = '''
import os, runpy, signal, sys
from orbax.checkpoint._src.path import atomicity
step, where = os.environ["KILL_STEP"], os.environ["KILL_WHERE"]
original = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self):
  final = self._final_path
  if (where == "commit" and final.name == step) or (
      where == "items" and final.name == "state" and final.parent.name.startswith(step + ".")):
    os.kill(os.getpid(), signal.SIGKILL)
  return await original(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path(os.path.join(os.environ["ROOT"], "train.py"), run_name="__main__")
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory, digits_config_file):
  base = tmp_path_factory.mktemp("resume")
  digits_config_file(base / "tiny.py", steps=STEPS, lr_boundaries=(10, 20), checkpoint_every=EVERY)
  # Deterministic by construction: XLA:CPU on one thread per op, whatever the machine's load.
  flags = ("--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false "
           "intra_op_parallelism_threads=1")
  env = dict(os.environ, XLA_FLAGS=flags, ROOT=ROOT,
             JAX_COMPILATION_CACHE_DIR=str(base / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=ROOT)
  return base, env


def _command(base, workdir, killer=False, extra=()):
  head = [sys.executable, "-c", KILLER] if killer else [sys.executable, os.path.join(ROOT, "train.py")]
  return head + [f"--config={base / 'tiny.py'}", f"--workdir={workdir}", *extra]


def _train(base, env, workdir, extra=(), **kill):
  proc = subprocess.run(_command(base, workdir, killer=bool(kill), extra=extra),
                        env=dict(env, **kill), cwd=ROOT, capture_output=True, text=True, timeout=300)
  return proc


def _train_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [json.loads(line) for line in f.read().splitlines() if line.endswith("}")]
  return [r["step"] for r in lines if r["split"] == "train"]


@pytest.fixture(scope="module")
def uninterrupted(env):
  base, env = env
  proc = _train(base, env, base / "uninterrupted")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return checkpoints.load_variables(str(base / "uninterrupted"))


def _assert_same_as_uninterrupted(workdir, uninterrupted):
  variables, meta = checkpoints.load_variables(str(workdir))
  assert meta.source["step"] == STEPS
  for part in ("params", "batch_stats"):
    chex.assert_trees_all_equal(variables[part], uninterrupted[0][part])  # Bit for bit.


def _complete_steps(workdir):
  with checkpoints.TrainCheckpoints(str(workdir), keep=None) as ckpts:
    return ckpts.steps()


def test_sigkill_at_an_arbitrary_step_then_resume(env, uninterrupted):
  base, env = env
  workdir = base / "killed_at_step"
  proc = subprocess.Popen(_command(base, workdir), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not any(s >= 10 for s in _train_steps(workdir)):
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
  killed_at = max(_train_steps(workdir))
  assert 10 <= killed_at < STEPS
  assert max(_complete_steps(workdir)) <= killed_at

  proc = _train(base, env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_as_uninterrupted(workdir, uninterrupted)
  # The steps after the last checkpoint ran twice but are written once (metrics.jsonl; TensorBoard
  # is checked in tests/test_metrics.py).
  assert _train_steps(workdir) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_then_resume(env, uninterrupted):
  base, env = env
  workdir = base / "killed_in_save"
  # Killed while committing step 8 (everything written, not yet renamed into place).
  proc = _train(base, env, workdir, KILL_STEP="8", KILL_WHERE="commit")
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert _complete_steps(workdir) == [4]
  assert any(name.startswith("8.orbax-checkpoint-tmp") for name in os.listdir(workdir / "checkpoints"))

  # Resumes from 4, then is killed with step 16's items half committed.
  proc = _train(base, env, workdir, KILL_STEP="16", KILL_WHERE="items")
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert _complete_steps(workdir) == [4, 8, 12]  # 16 is partial.
  assert "resumed from the checkpoint of step 4" in proc.stderr

  proc = _train(base, env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_as_uninterrupted(workdir, uninterrupted)


@pytest.mark.parametrize("name,override,message", [
    ("another_model", "--config.model=resnet32",
     "train.py: error: ... was trained with resnet20; you asked for resnet32"),
    ("another_batch", "--config.batch_size=8",
     "train.py: error: config.batch_size: this run was trained with 16; you asked for 8 (it may not "
     "change on resume: "),
])
def test_a_forbidden_change_is_refused_in_one_line_and_nothing_changes(env, uninterrupted, digest, name,
                                                                       override, message):
  """Through train.py: another model (the state layout check) or another batch size (the resume
  table): one line naming what differs, exit status 2, no array dumps, the workdir byte for byte."""
  base, env = env
  workdir = base / name
  shutil.copytree(base / "uninterrupted", workdir)
  before = digest(workdir)
  proc = _train(base, env, workdir, extra=[override])
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  head, _, tail = message.partition(" ... ")
  assert last.startswith(head) and tail in last, last
  assert "Traceback" not in proc.stderr and len(proc.stderr) < 5000  # No array dumps.
  assert digest(workdir) == before


def test_damaged_newest_step_and_a_stray_directory_then_resume(env, uninterrupted, digest):
  """The issue's inputs through train.py: the newest step's largest array file truncated and a stray
  empty checkpoints/1000. The run resumes from the step before, sets both aside byte for byte,
  saves every later step again (the final one included) and ends bit for bit as uninterrupted."""
  base, env = env
  workdir = base / "damaged_newest"
  shutil.copytree(base / "uninterrupted", workdir)
  newest = max(_complete_steps(workdir))
  assert newest == STEPS
  _corrupt(workdir / "checkpoints" / str(newest), "truncate")
  (workdir / "checkpoints" / "1000").mkdir()
  before = digest(workdir / "checkpoints" / str(newest))
  proc = _train(base, env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_as_uninterrupted(workdir, uninterrupted)
  assert _complete_steps(workdir)[-1] == STEPS
  assert sorted(os.listdir(workdir / "checkpoints" / "damaged")) == ["1000-empty", f"{STEPS}-unreadable"]
  assert digest(workdir / "checkpoints" / "damaged" / f"{STEPS}-unreadable") == before


# train.py that, with PAUSE_FILE set, waits after its checkpoint of step 8 until that file exists:
# a run that certainly holds the workdir while another starts.
PAUSER = '''
import os, runpy, sys, time
from resnet_jax.training import train_lib
original = train_lib.save_checkpoint

def save_checkpoint(*args):
  original(*args)
  if args[-1] == 8:  # The step.
    open(os.environ["PAUSE_FILE"] + ".reached", "w").close()
    deadline = time.time() + 120
    while not os.path.exists(os.environ["PAUSE_FILE"]) and time.time() < deadline:
      time.sleep(0.01)

train_lib.save_checkpoint = save_checkpoint
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path(os.path.join(os.environ["ROOT"], "train.py"), run_name="__main__")
'''


def test_a_second_trainer_is_refused_and_the_first_is_unaffected(env, uninterrupted):
  base, env = env
  workdir, pause = base / "two_trainers", base / "pause"
  first = subprocess.Popen([sys.executable, "-c", PAUSER, *_command(base, workdir)[2:]],
                           env=dict(env, PAUSE_FILE=str(pause)), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not os.path.exists(f"{pause}.reached") and first.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  assert first.poll() is None, first.stderr.read()[-3000:]
  start = time.time()
  second = _train(base, env, workdir)
  took = time.time() - start
  pause.touch()
  # Refused before any data or compilation: the time is Python and JAX starting (8-10 s measured on
  # a loaded 2-core machine); the bound leaves room for heavier load.
  assert second.returncode == 2 and took < 60, (took, second.stderr[-3000:])
  last = second.stderr.strip().splitlines()[-1]
  assert last.startswith("train.py: error: ") and f"in use by another trainer: pid {first.pid} on " in last
  assert "Traceback" not in second.stderr
  assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
  _assert_same_as_uninterrupted(workdir, uninterrupted)


def _corrupt(step_dir, how):
  if how == "truncate":  # The largest array file, cut in half.
    files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / "state") for f in fs]
    path = max(files, key=os.path.getsize)
    os.truncate(path, os.path.getsize(path) // 2)
  elif how == "metadata":
    os.remove(step_dir / "state" / "_METADATA")
  else:  # Another valid data position, the seal left as it was.
    path = step_dir / "data" / "process_0-of-1.json"
    body = json.loads(path.read_text())
    position = json.loads(body["position"])
    position[next(iter(position))] = 0
    body["position"] = json.dumps(position)
    path.write_text(json.dumps(body))


@pytest.mark.slow
def test_chaos_random_kills_and_damaged_checkpoints_then_resume(env, uninterrupted):
  """Seeded random SIGKILLs, each followed by damage to the newest complete step, then a restart;
  the last run ends bit for bit as the uninterrupted one, its final step present and intact, and
  every damaged step kept under checkpoints/damaged/."""
  base, env = env
  rng = random.Random(9)
  workdir = base / "chaos"
  damaged, resumed = 0, 0
  for _ in range(3):
    log = workdir / "metrics.jsonl"
    # The restarted run rewrites the file (os.replace: a new inode) without the steps after the
    # checkpoint it resumes from, then appends; steps in the old file do not count.
    old_file = log.stat().st_ino if log.exists() else None
    # At most STEPS - 8: steps of margin for the kill to land before the run ends, under load too.
    target = min(resumed + rng.randint(10, 14), STEPS - 8)
    proc = subprocess.Popen(_command(base, workdir), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
        log.exists() and log.stat().st_ino != old_file and max(_train_steps(workdir) or [0]) >= target):
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before step {target}"
    assert log.exists()
    steps = _complete_steps(workdir)
    if len(steps) >= 2:  # Damage the newest, so the restart must fall back and set it aside.
      _corrupt(workdir / "checkpoints" / str(steps[-1]), rng.choice(["truncate", "metadata", "position"]))
      damaged += 1
      steps = steps[:-1]
    resumed = steps[-1] if steps else 0
  proc = _train(base, env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_as_uninterrupted(workdir, uninterrupted)
  with checkpoints.TrainCheckpoints(str(workdir), keep=None, read_only=True) as ckpts:
    assert ckpts.read(STEPS).step == STEPS
  assert len(os.listdir(workdir / "checkpoints" / "damaged")) == damaged >= 1


# The digits run: every modern piece at once (on the tiny 24-step digits config above).
MODERN = ("--config.auto_augment=ta_wide", "--config.mixup_alpha=0.2", "--config.cutmix_alpha=1.0",
          "--config.random_erase=0.1", "--config.model_ema=True", "--config.eval_every_steps=12")


@pytest.mark.slow
def test_modern_digits_run_logs_ema_and_resumes_exactly_after_a_kill(env):
  base, env = env
  whole = base / "modern"
  proc = _train(base, env, whole, extra=MODERN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(whole / "metrics.jsonl") as f:
    splits = [(r["split"], r["step"]) for r in map(json.loads, f)]
  assert ("eval_ema", 12) in splits and ("eval_ema", 24) in splits

  killed = base / "modern_killed"  # SIGKILL while committing step 12: resumes from step 8.
  proc = _train(base, env, killed, extra=MODERN, KILL_STEP="12", KILL_WHERE="commit")
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert _complete_steps(killed) == [4, 8]
  proc = _train(base, env, killed, extra=MODERN)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for ema in (False, True):  # Augmentation, MixUp/CutMix draws and the EMA all replayed exactly.
    got, _ = checkpoints.load_variables(str(killed), ema=ema)
    want, _ = checkpoints.load_variables(str(whole), ema=ema)
    chex.assert_trees_all_equal(got, want)
