"""Two JAX processes on 127.0.0.1 (jax.distributed, CPU, gloo collectives) train the same steps as
one process with the same global batch."""

import os
import socket
import subprocess
import sys

import chex
import pytest

from resnet_jax.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = dict(steps=6, lr_boundaries=(4,), checkpoint_every=3)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(config, workdir, *flags):
  return [sys.executable, os.path.join(ROOT, "train.py"), f"--config={config}",
          f"--workdir={workdir}", *flags]


def _env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHONPATH=ROOT)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, digits_config_file):
  """The reference: one process with 4 devices, global batch 16, 'jit' layout."""
  base = tmp_path_factory.mktemp("multihost")
  digits_config_file(base / "tiny.py", **TINY_RUN)
  one = subprocess.run(_command(base / "tiny.py", base / "one"), env=_env(4), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert one.returncode == 0, one.stderr[-3000:]
  return checkpoints.load_variables(str(base / "one"))


# 'pmap' across the two processes passes too (run with parallelism="pmap"); only 'jit' is kept
# in the suite, for time: each case starts and compiles in three processes.
@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["jit"])
def test_two_processes_match_one(tmp_path, parallelism, one_process, digits_config_file):
  """Two processes of 2 devices each, against the one-process 'jit' reference."""
  config = digits_config_file(tmp_path / "tiny.py", **TINY_RUN)
  mode = f"--config.parallelism={parallelism}"

  port = _free_port()
  procs = [subprocess.Popen(
      _command(config, tmp_path / "two", mode, "--config.distributed.initialize=True",
               f"--config.distributed.coordinator_address=127.0.0.1:{port}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
      env=_env(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]

  ref, ref_meta = one_process
  got, meta = checkpoints.load_variables(str(tmp_path / "two"))
  assert ref_meta.source["step"] == meta.source["step"] == 6
  # Same examples per global batch; only the order of the cross-device sums differs.
  for part in ("params", "batch_stats"):
    chex.assert_trees_all_close(got[part], ref[part], rtol=1e-4, atol=1e-5)
  final = [line for line in outputs[0][0].splitlines() if line.startswith("final:")]
  assert final and "(360 examples)" in final[0]  # Every eval example once, over both processes.
