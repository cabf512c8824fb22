"""The built wheel, installed into a fresh venv with no checkout on the path, trains a shipped recipe."""

import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_installed_wheel_trains_a_recipe(tmp_path):
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                  ROOT], check=True, timeout=300, capture_output=True)
  (wheel,) = (tmp_path / "dist").glob("flax_resnets-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "resnet_jax/configs/digits.py" in names and "resnet_jax/train.py" in names
  assert not any(n.startswith(("configs/", "tests/", "train.py")) for n in names)

  # The venv reuses this environment's packages (jax, ...) through a .pth line, after its own
  # site-packages (so the wheel's resnet_jax comes first), and neither the working directory nor
  # PYTHONPATH holds the checkout. (`--system-site-packages` would reach the base interpreter's
  # packages, not this virtual environment's.)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  (site_packages,) = venv.glob("lib/python*/site-packages")
  (site_packages / "_reuse_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # one CPU device; compiles faster
  # --ignore-installed: the reused environment may hold this distribution already, editable (make's .venv).
  subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                  "--ignore-installed", str(wheel)],
                 check=True, timeout=300, capture_output=True, env=env, cwd=tmp_path)
  where = subprocess.run([str(venv / "bin" / "python"), "-c", "import resnet_jax; print(resnet_jax.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.startswith(str(venv)), where.stdout

  proc = subprocess.run(
      [str(venv / "bin" / "resnet-jax"), "train", "--config", "digits", "--workdir", str(tmp_path / "run"),
       "--config.num_train_steps=3", "--config.batch_size=16", "--config.image_size=8",
       "--config.log_every_steps=1", "--config.progress_bar=false"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith("final: eval loss") and "top-1 error" in proc.stdout
  assert "(360 examples)" in proc.stdout
  assert "INFO step 3: eval" in proc.stderr  # progress and evaluations go to stderr
  assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"split": "train"') == 3
