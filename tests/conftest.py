"""Shared test set-up: 8 emulated CPU devices, exact float32 matmuls, torchvision on demand."""

import os

# Must precede the first import of jax anywhere in the test session. Tests compile many large graphs
# and run them on tiny inputs, so a cheaper LLVM pipeline saves about a quarter of the suite's time.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

# Parity with PyTorch is checked in float32; "highest" stops XLA from using reduced-precision passes.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def torchvision():
  """torchvision, or a skip naming why it is missing."""
  try:
    from resnet_jax._torchvision import import_torchvision
    return import_torchvision()
  except ImportError as e:
    pytest.skip(f"torchvision not installed: {e}")


@pytest.fixture(scope="session")
def torch(torchvision):
  import torch as torch_module
  torch_module.set_num_threads(2)
  return torch_module


def _load_benchmark(name: str):
  """benchmarks/NAME.py as a module (benchmarks/ is scripts, not a package)."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                      f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session")
def benchmark():
  """`benchmark(name)`: the module of benchmarks/NAME.py."""
  return _load_benchmark


def _digest(root) -> dict:
  """{relative path: (size, SHA-256)} of every file under `root`: proves nothing was changed."""
  import hashlib
  out = {}
  for directory, _, files in os.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = (os.path.getsize(path), hashlib.sha256(f.read()).hexdigest())
  return out


@pytest.fixture(scope="session")
def digest():
  return _digest


def _tiny_run_config(**fields):
  """A 3-block ResNet-20 trained for 2 steps of batch 8: seconds, and every file a real run writes."""
  import ml_collections
  from configs import default
  config = default.get_config()
  config.model = "resnet20"
  config.model_overrides = ml_collections.ConfigDict({"stage_sizes": (1, 1, 1)})
  config.augment = "none"
  config.batch_size, config.num_train_steps = 8, 2
  config.schedule_unit, config.lr_boundaries = "steps", ()
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 1, 1000, 2
  config.progress_bar, config.num_data_threads, config.prefetch_batches = False, 1, 1
  for key, value in fields.items():
    config[key] = value
  return config


def _tiny_config(**overrides):
  """Digits at their native 8x8, a 3-block ResNet, batch 16: a whole run takes seconds."""
  import ml_collections
  from configs import default
  config = default.get_config()
  config.model = "resnet20"
  config.model_overrides = ml_collections.ConfigDict({"stage_sizes": (1, 1, 1), "in_channels": 1})
  config.source, config.train_split, config.eval_split = "digits", "train", "test"
  config.image_size, config.augment, config.eval_crop_fraction = 8, "none", 1.0
  config.mean, config.std = (84.0,), (105.0,)
  config.batch_size, config.num_train_steps = 16, 6
  config.base_learning_rate = 1.6  # lr 0.1.
  config.schedule_unit, config.lr_boundaries = "steps", (4,)
  config.log_every_steps, config.eval_every_steps = 1, 1000
  config.checkpoint_every_steps, config.keep_checkpoints = 3, 2
  config.progress_bar, config.num_data_threads, config.prefetch_batches = False, 1, 1
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope="session")
def tiny_config():
  """`tiny_config(**overrides)`: the config of a whole digits run in seconds."""
  return _tiny_config


def _write_digits_config(path, *, steps: int, lr_boundaries: tuple, checkpoint_every: int):
  """A config file of the digits recipe at 8 px, 3 blocks, batch 16, for `train.py` in a subprocess."""
  path.write_text(f'''
import ml_collections
from configs import digits

def get_config():
  config = digits.get_config()
  config.model_overrides = ml_collections.ConfigDict({{"in_channels": 1, "stage_sizes": (1, 1, 1)}})
  config.image_size = 8
  config.batch_size = 16
  config.num_train_steps = {steps}
  config.schedule_unit = "steps"
  config.lr_boundaries = {tuple(lr_boundaries)}
  config.log_every_steps = 1
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = {checkpoint_every}
  config.progress_bar = False
  config.num_data_threads = 1
  return config
''')
  return path


@pytest.fixture(scope="session")
def digits_config_file():
  """`digits_config_file(path, steps=, lr_boundaries=, checkpoint_every=)` writes a tiny run's config."""
  return _write_digits_config


@pytest.fixture(scope="session")
def digits_workdir(tmp_path_factory):
  """The digits recipe's model shape (1 input channel, 16 px) trained for 2 steps. Read-only for tests."""
  import ml_collections
  from resnet_jax.training import train_lib
  config = _tiny_run_config(source="digits", train_split="train", eval_split="test", image_size=16,
                            eval_crop_fraction=1.0, mean=(84.0,), std=(105.0,))
  config.model_overrides = ml_collections.ConfigDict({"stage_sizes": (1, 1, 1), "in_channels": 1})
  workdir = str(tmp_path_factory.mktemp("digits_run"))
  train_lib.train_and_evaluate(config, workdir)
  return workdir


FOLDER_CLASSES = ("ant", "bee", "cat")


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory):
  """(workdir, data root) of a 3-channel 16-px image-folder run with its own mean/std and a center
  evaluation resize of 20 (crop fraction 0.8). The 'val' split lacks the class 'bee'."""
  import numpy as np
  from PIL import Image
  from resnet_jax.training import train_lib
  root = tmp_path_factory.mktemp("folder_data")
  rng = np.random.default_rng(0)
  for split, classes, count in (("train", FOLDER_CLASSES, 4), ("val", ("ant", "cat"), 2)):
    for label, name in enumerate(classes):
      os.makedirs(root / split / name)
      for i in range(count):
        colour = np.array([60, 120, 200]) if name == "ant" else np.array([200, 90, 30]) * (label + 1) // 3
        pixels = np.clip(colour + rng.normal(0, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / split / name / f"{i}.png")
  config = _tiny_run_config(source="folder", data_dir=str(root), train_split="train", eval_split="val",
                            image_size=16, eval_crop_fraction=0.8, mean=(100.0, 110.0, 120.0),
                            std=(50.0, 60.0, 70.0))
  workdir = str(tmp_path_factory.mktemp("folder_run"))
  train_lib.train_and_evaluate(config, workdir)
  return workdir, str(root)
