"""Killing training (SIGKILL) at any step or during a checkpoint write, then restarting, gives the
parameters of a run never interrupted; a half-written checkpoint is never resumed from."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from resnet_jax import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 24, 4

CONFIG = f'''
import ml_collections
from configs import digits

def get_config():
  config = digits.get_config()
  config.model_overrides = ml_collections.ConfigDict({{"in_channels": 1, "stage_sizes": (1, 1, 1)}})
  config.image_size = 8
  config.batch_size = 16
  config.num_train_steps = {STEPS}
  config.schedule_unit = "steps"
  config.lr_boundaries = (10, 20)
  config.log_every_steps = 1
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = {EVERY}
  config.progress_bar = False
  config.num_data_threads = 1
  return config
'''

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
def env(tmp_path_factory):
  base = tmp_path_factory.mktemp("resume")
  (base / "tiny.py").write_text(CONFIG)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", ROOT=ROOT,
             JAX_COMPILATION_CACHE_DIR=str(base / "xla_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=ROOT)
  return base, env


def _command(base, workdir, killer=False):
  head = [sys.executable, "-c", KILLER] if killer else [sys.executable, os.path.join(ROOT, "train.py")]
  return head + [f"--config={base / 'tiny.py'}", f"--workdir={workdir}"]


def _train(base, env, workdir, **kill):
  proc = subprocess.run(_command(base, workdir, killer=bool(kill)), env=dict(env, **kill),
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
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
  assert meta["step"] == STEPS
  for part in ("params", "batch_stats"):
    for (path, a), b in zip(_leaves(variables[part]), [x for _, x in _leaves(uninterrupted[0][part])]):
      np.testing.assert_array_equal(a, b, err_msg=f"{part}/{path}")  # Bit for bit.


def _leaves(tree, prefix=""):
  for key in sorted(tree):
    if isinstance(tree[key], dict):
      yield from _leaves(tree[key], f"{prefix}{key}/")
    else:
      yield prefix + key, tree[key]


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
  assert min(s for s in _train_steps(workdir)[8:]) == 5  # It did resume from step 4.

  proc = _train(base, env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_as_uninterrupted(workdir, uninterrupted)
