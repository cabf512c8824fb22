"""torchvision <-> Flax conversion: parity on all ten architectures, round trips, strict errors."""

import copy
import os
import subprocess
import sys

import jax
import chex
import numpy as np
import pytest

from resnet_jax.weights import convert, verify
from resnet_jax.weights.convert import TORCHVISION_ARCHS, CheckpointError, ConversionError
from resnet_jax.models.resnet import get_model

# Batch 2 at 64x64 leaves 2x2 final maps: every layer runs, in a fraction of 224px's time.
BATCH, SIZE = 2, 64
# Compiling a 100-layer graph costs ~20 s on 2 cores, more than running it op by op (which reuses
# one kernel per shape); so only these go through jax.jit, the way users run them.
JIT = ("resnet18", "resnet34", "resnet50", "resnext50_32x4d", "wide_resnet50_2")
RTOL = 1e-5


def _images(seed=0, size=SIZE):
  return np.random.default_rng(seed).standard_normal((BATCH, size, size, 3)).astype(np.float32)


def _flax_forward(model, variables, x, jit):
  """(eval logits, train logits, updated batch_stats) in one trace."""
  def forward(variables, x):
    logits = model.apply(variables, x, train=False)
    train_logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, train_logits, updates["batch_stats"]
  return jax.tree.map(np.asarray, (jax.jit(forward) if jit else forward)(variables, x))


def _assert_close(logits, expected, rtol=RTOL, what="eval"):
  agreement = verify.compare_logits(logits, expected)
  print(f"{what}: {agreement}")  # shown by pytest -s, and on failure
  assert agreement.rel < rtol, agreement
  assert agreement.top1 == 1.0, agreement


def _check_parity(torch_model, arch, jit, **overrides):
  """Converts `torch_model` and checks eval and train forwards, round trips and a strict load."""
  import torch
  state = {k: v.clone() for k, v in torch_model.state_dict().items()}
  # Inference is exercised on the plain architectures; with options the name is given.
  variables = convert.from_torchvision(torch_model, arch if overrides else None)
  # Round trips are exact in both directions (num_batches_tracked aside: Flax does not count).
  back = convert.to_torchvision(variables, arch)
  for key, value in state.items():
    if not key.endswith("num_batches_tracked"):
      assert torch.equal(back[key], value), key
  chex.assert_trees_all_equal(convert.from_torchvision(back, arch), variables, strict=True)
  # A copy has the same modules as a fresh model, without the cost of initialising one; it then
  # serves as the float64 reference of train mode.
  reference = copy.deepcopy(torch_model)
  reference.load_state_dict(back, strict=True)

  x = _images()
  model = get_model(arch, **{"num_classes": torch_model.fc.out_features, **overrides})
  logits, train_logits, batch_stats = _flax_forward(model, variables, x, jit)
  _assert_close(logits, verify.run_torchvision(torch_model, x))
  _check_train_mode(torch_model, reference.double(), x, train_logits,
                    {"params": variables["params"], "batch_stats": batch_stats})


def _check_train_mode(torch_model, truth_model, x, logits, updated, to_state=None):
  """Train mode (batch statistics, running statistics updated) is as exact as torch's float32.

  Train mode normalises each channel of layer4 over only 2 x 2 x 2 = 8 values, which amplifies
  float32 rounding with depth: torch float32 itself is ~1e-3 away from torch float64 on resnet152,
  and that distance moves by +-20% when the input moves by one float32 ulp. So the noise floor is
  torch float32's largest error (vs float64 torch) over the input and 3 copies of it moved by ~1 ulp,
  and Flax must be within 3 times that floor. Measured (2-core CPU, 2026-11-23), Flax's error over the
  floor: logits 0.94-1.68, running statistics 0.96-1.38, resnet152 the highest; a real error (a
  biased variance in the running statistics, a dropped BatchNorm) is orders of magnitude above it.
  """
  truth = verify.run_torchvision(truth_model, x, train=True)
  before = {k: v.clone() for k, v in torch_model.state_dict().items()}  # train mode updates in place
  floor_logits, floor_stats, expected = 0.0, 0.0, None
  for k in range(4):
    moved = x if k == 0 else (x * (1 + 2.0**-24 * np.random.default_rng(k).standard_normal(
        x.shape))).astype(np.float32)
    torch_model.load_state_dict(before)
    out = verify.run_torchvision(torch_model, moved, train=True)
    expected = out if k == 0 else expected
    floor_logits = max(floor_logits, verify.compare_logits(out, truth).rel)
    floor_stats = max(floor_stats, _stats_error(
        {name: v.numpy() for name, v in torch_model.state_dict().items()}, truth_model))
  flax_error = verify.compare_logits(logits, truth).rel
  to_state = to_state or (lambda v: convert.to_torchvision(v, as_numpy=True))
  flax_stats = _stats_error(to_state(updated), truth_model)
  print(f"train: vs torch float32 {verify.compare_logits(logits, expected)}; rel error vs float64: "
        f"logits flax {flax_error:.3g}, floor {floor_logits:.3g}; running statistics flax "
        f"{flax_stats:.3g}, floor {floor_stats:.3g}")
  assert flax_error <= 3 * floor_logits + 1e-6
  assert verify.compare_logits(logits, expected).top1 == 1.0
  assert flax_stats <= 3 * floor_stats + 1e-6


def _stats_error(state, truth_model):
  """Largest error of the running means and variances in `state` relative to float64 torch's."""
  return max((np.max(np.abs(np.asarray(state[k], np.float64) - v.numpy())) / np.max(np.abs(v.numpy()))
              for k, v in truth_model.state_dict().items() if k.endswith(("mean", "var"))),
             default=0.0)  # a GroupNorm model has no running statistics


BIG = ("resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2")


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in BIG else a
                                  for a in TORCHVISION_ARCHS])
def test_parity_with_torchvision(torch, arch):
  torch_model = verify.torchvision_model(arch, seed=TORCHVISION_ARCHS.index(arch))
  assert convert.infer_arch(torch_model.state_dict()) == convert.Inferred(arch, 1000)
  _check_parity(torch_model, arch, jit=arch in JIT)


def test_parity_num_classes_and_zero_init_residual(torch):
  # One compile for both options: a head of 10 classes, and blocks whose last BN scale is zero.
  options = dict(num_classes=10, zero_init_residual=True)
  torch_model = verify.torchvision_model("resnet18", seed=1, **options)
  _check_parity(torch_model, "resnet18", jit=True, **options)


def test_parity_dilation_resnet50(torch):
  options = dict(replace_stride_with_dilation=[False, True, True])
  torch_model = verify.torchvision_model("resnet50", seed=2, **options)
  # Weights do not show dilation: the architecture is named, the option passed to the model.
  _check_parity(torch_model, "resnet50", jit=True,
                replace_stride_with_dilation=(False, True, True))


def test_zero_init_residual_weights_convert_as_zeros(torch):
  torch_model = verify.torchvision_model("resnet18", seed=6, zero_init_residual=True)
  params = convert.from_torchvision(torch_model)["params"]
  blocks = [k for k in params if k.startswith("layer")]
  assert len(blocks) == 8
  for block in blocks:
    assert not np.any(params[block]["bn2"]["scale"]), block
    assert np.all(params[block]["bn1"]["scale"] != 0), block


def test_headless(torch):
  torch_model = verify.torchvision_model("resnet18", seed=3)
  state = {k: v for k, v in torch_model.state_dict().items() if not k.startswith("fc.")}
  assert convert.infer_arch(state) == convert.Inferred("resnet18", None)
  variables = convert.from_torchvision(state)
  assert "fc" not in variables["params"]
  torch_model.fc = torch.nn.Identity()
  x = _images()
  features = get_model("resnet18", num_classes=None).apply(variables, x)
  _assert_close(features, verify.run_torchvision(torch_model, x))
  assert set(convert.to_torchvision(variables, "resnet18")) == set(torch_model.state_dict())


def test_torch_keys():
  assert convert.torch_key(("params", "layer2_0", "downsample_conv", "kernel")) == \
      "layer2.0.downsample.0.weight"
  assert convert.torch_key(("batch_stats", "layer4_2", "downsample_bn", "var")) == \
      "layer4.2.downsample.1.running_var"
  assert convert.torch_key(("params", "fc", "bias")) == "fc.bias"
  layout = convert.torchvision_layout("resnext50_32x4d", 1000)
  # Grouped 3x3: torch keeps in_channels / groups in the kernel, as Flax's HWIO does.
  assert layout["layer1.0.conv2.weight"][1] == (128, 4, 3, 3)
  assert layout["fc.weight"][1] == (1000, 2048)


def test_numpy_state_dict_with_wrapper_and_dataparallel_prefix(torch, tmp_path):
  torch_model = verify.torchvision_model("resnet18", seed=4)
  wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in torch_model.state_dict().items()}}
  path = tmp_path / "finetuned.pth"
  torch.save(wrapped, path)
  chex.assert_trees_all_equal(convert.from_torchvision(path), convert.from_torchvision(torch_model),
                              strict=True)
  as_numpy = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  chex.assert_trees_all_equal(convert.from_torchvision(as_numpy, "resnet18"),
                              convert.from_torchvision(torch_model), strict=True)


# ----------------------------------------------------------------------------------------------
# Bad inputs.

def test_wrong_architecture_lists_missing_unexpected_and_misshaped(torch):
  state = verify.torchvision_model("resnet18").state_dict()
  with pytest.raises(ConversionError) as e:
    convert.from_torchvision(state, "resnet34")
  assert "layer1.2.conv1.weight" in e.value.missing
  assert not e.value.unexpected and not e.value.misshaped
  assert "look like resnet18" in str(e.value)

  with pytest.raises(ConversionError) as e:
    convert.from_torchvision(state, "resnet50")
  message = str(e.value)
  assert "missing keys" in message and "layer1.0.conv3.weight" in e.value.missing
  assert ("fc.weight", (1000, 2048), (1000, 512)) in e.value.misshaped
  assert "fc.weight: (1000, 2048) vs (1000, 512)" in message
  assert "... and" in message  # long lists are cut, with a count


def test_unexpected_and_misshaped_keys(torch):
  state = dict(verify.torchvision_model("resnet18").state_dict())
  state["fc.bias"] = torch.zeros(7)
  state["extra.weight"] = torch.zeros(3)
  with pytest.raises(ConversionError) as e:
    convert.from_torchvision(state)
  assert e.value.unexpected == ["extra.weight"]
  assert e.value.misshaped == [("fc.bias", (1000,), (7,))]
  assert not e.value.missing


def test_not_a_state_dict(torch, tmp_path):
  path = tmp_path / "training.pth"
  torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
  with pytest.raises(CheckpointError, match="'epoch', 'optimizer' are not tensors"):
    convert.from_torchvision(path)


def test_not_a_resnet():
  with pytest.raises(ConversionError, match="not a ResNet"):
    convert.from_torchvision({"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})


def test_truncated_pth(torch, tmp_path):
  path = tmp_path / "resnet18.pth"
  torch.save(verify.torchvision_model("resnet18").state_dict(), path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError, match="resnet18.pth is not a readable PyTorch checkpoint"):
    convert.from_torchvision(path)


@pytest.mark.parametrize("name", ["notes.pth", "notes.safetensors"])
def test_not_a_checkpoint(torch, tmp_path, name):
  path = tmp_path / name
  path.write_text("these are not weights\n" * 100)
  with pytest.raises(CheckpointError, match=name):
    convert.from_torchvision(path)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    convert.from_torchvision(tmp_path / "absent.pth")


class _Payload:
  """Pickles as a call that creates a file: what a malicious checkpoint would do on load."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_pth_with_code_is_refused_without_running_it(torch, tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)
  with pytest.raises(CheckpointError, match="evil.pth"):
    convert.from_torchvision(path)
  assert not marker.exists()


def test_safetensors_without_torch(torch, tmp_path):
  torch_model = verify.torchvision_model("resnet18", seed=5)
  path = tmp_path / "resnet18.safetensors"
  from safetensors.numpy import save_file
  save_file(convert.to_torchvision(convert.from_torchvision(torch_model), as_numpy=True), path)
  # A fresh interpreter in which `import torch` fails, as on a machine without it.
  script = f"""
import sys
sys.modules["torch"] = None
sys.modules["torchvision"] = None
import numpy as np
import resnet_jax
from resnet_jax.weights import convert
variables = convert.from_torchvision({str(path)!r})
np.savez({str(tmp_path / "out.npz")!r}, kernel=variables["params"]["conv1"]["kernel"],
         var=variables["batch_stats"]["layer4_1"]["bn2"]["var"])
"""
  subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  out = np.load(tmp_path / "out.npz")
  state = torch_model.state_dict()
  np.testing.assert_array_equal(out["kernel"], state["conv1.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(out["var"], state["layer4.1.bn2.running_var"].numpy())


def test_importing_resnet_jax_does_not_import_torch():
  script = "import sys, resnet_jax, resnet_jax.weights.convert, resnet_jax.weights.hub, resnet_jax.data.transforms; " \
           "assert 'torch' not in sys.modules, 'torch was imported'"
  subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_replace_head():
  variables = {"params": {"conv1": {"kernel": np.zeros((7, 7, 3, 64), np.float32)},
                          "fc": {"kernel": np.zeros((512, 1000), np.float32),
                                 "bias": np.zeros(1000, np.float32)}}}
  new = convert.replace_head(variables, "resnet18", 10, seed=0)
  assert new["params"]["fc"]["kernel"].shape == (512, 10)
  limit = 1 / np.sqrt(512)
  assert np.all(np.abs(new["params"]["fc"]["bias"]) <= limit)
  assert np.all(np.abs(new["params"]["fc"]["kernel"]) <= limit)  # nn.Linear's kaiming_uniform(a=sqrt 5)
  assert "fc" not in convert.replace_head(variables, "resnet18", None)["params"]
  assert new["params"]["conv1"] is variables["params"]["conv1"]


def test_bfloat16_variables_export_as_float32(torch):
  import jax.numpy as jnp
  variables = convert.from_torchvision(verify.torchvision_model("resnet18", seed=8))
  half = jax.tree.map(lambda v: np.asarray(v).astype(jnp.bfloat16), variables)
  state = convert.to_torchvision(half, "resnet18")
  assert state["conv1.weight"].dtype == torch.float32
  np.testing.assert_array_equal(state["fc.bias"].numpy(),
                                np.asarray(half["params"]["fc"]["bias"], np.float32))


def test_integer_tensors_are_refused_naming_key_and_dtype(torch):
  """An int64 tensor where a weight belongs converted 'successfully' to a model of zero logits."""
  state = {k: v.numpy() for k, v in verify.torchvision_model("resnet18", seed=3).state_dict().items()}
  state["fc.weight"] = state["fc.weight"].astype(np.int64)
  with pytest.raises(ConversionError, match=r"floating point; 1 tensor\(s\) are not: fc.weight \(int64\)"):
    convert.from_torchvision(state, "resnet18")


def test_nonfinite_weights_are_refused_unless_allowed(torch):
  state = {k: v.numpy() for k, v in verify.torchvision_model("resnet18", seed=3).state_dict().items()}
  state["layer2.0.bn1.running_var"][:3] = [np.nan, np.inf, -np.inf]
  with pytest.raises(ConversionError, match=r"layer2.0.bn1.running_var \(3 of 128\).*allow_nonfinite"):
    convert.from_torchvision(state, "resnet18")
  variables = convert.from_torchvision(state, "resnet18", allow_nonfinite=True)
  assert np.sum(~np.isfinite(variables["batch_stats"]["layer2_0"]["bn1"]["var"])) == 3
