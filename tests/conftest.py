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
