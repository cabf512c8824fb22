"""Imports torchvision's models on a CPU-only torch, whose CUDA-built extension may not load."""

from __future__ import annotations

import importlib

_SHIM = None
# How to get torch and torchvision, for error messages (README "Set-up" has the CPU-only route).
# The default index serves Linux a multi-GB CUDA build of torch; PyTorch's CPU index a ~200 MB one.
INSTALL_HINT = ("pip install torch torchvision (CPU-only, a much smaller download: add "
                "--index-url https://download.pytorch.org/whl/cpu)")


def import_torchvision():
  """Returns the `torchvision` module, importable without its compiled extension.

  torchvision wheels built for CUDA fail to load their C++ extension beside a CPU build of torch,
  and `import torchvision` then raises in the registration of the fake kernels of two detection
  operators (`torchvision::nms`, `torchvision::qnms`) whose schemas the extension would have defined.
  Defining those two schemas first lets the import finish; the classification models are pure
  Python and do not use them. Calling `torchvision.ops.nms` stays unsupported in that case.

  Raises:
    ImportError: torch or torchvision is not installed (see `INSTALL_HINT`).
  """
  global _SHIM
  try:
    import torch  # noqa: F401
  except ImportError as e:
    raise ImportError(f"this needs PyTorch: {INSTALL_HINT}") from e
  try:
    return importlib.import_module("torchvision")
  except RuntimeError as e:
    if "torchvision::nms" not in str(e):
      raise
  except ImportError as e:
    raise ImportError(f"this needs torchvision: {INSTALL_HINT}") from e
  import sys
  for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
    del sys.modules[name]
  _SHIM = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it unregisters
  _SHIM.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  _SHIM.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  return importlib.import_module("torchvision")
