"""The checkpoints users hold convert exactly: torchvision's and timm's train.py files, wrapped keys, EMA.

Every file here is written by the real objects: torchvision's model, torch's SGD, StepLR, DataParallel,
torch.compile, AveragedModel (what torchvision's reference ExponentialMovingAverage is), an
argparse.Namespace of hyper-parameters, and timm's CheckpointSaver and ModelEmaV3.
"""

import argparse
import copy
import os
import pathlib

import jax
import numpy as np
import pytest

from resnet_jax import cli
from resnet_jax.weights import convert, verify
from resnet_jax.weights.convert import CheckpointError
from resnet_jax.models.resnet import get_model

NUM_CLASSES = 10
# How each prefix arises: DataParallel/DDP ('module.'), torch.compile ('_orig_mod.'), both in
# either order.
PREFIXES = ("", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.")
# Layouts: a bare state_dict; torchvision's references/classification/train.py (with and without
# --model-ema); timm's train.py (CheckpointSaver, with and without EMA); the PyTorch tutorials'.
LAYOUTS = ("state_dict", "torchvision_train", "torchvision_train_ema", "timm_train",
           "timm_train_ema", "tutorial")
HAS_EMA = {"torchvision_train_ema", "timm_train_ema"}


def _wrap(torch, model, prefix):
  """`model` inside the wrappers whose state_dict keys carry `prefix` (sharing its parameters)."""
  for name in reversed([p for p in prefix.split(".") if p]):
    model = torch.nn.DataParallel(model) if name == "module" else torch.compile(model)
  return model


def _args(**fields):
  """The hyper-parameters that both train.py scripts save as 'args'."""
  return argparse.Namespace(model="resnet18", data_path="/data/imagenet", device="cpu",
                            batch_size=32, epochs=90, lr=0.1, momentum=0.9, weight_decay=1e-4,
                            lr_scheduler="steplr", lr_step_size=30, lr_gamma=0.1, weights=None,
                            mixup_alpha=0.0, distributed=False, **fields)


@pytest.fixture(scope="module")
def trained(torch):
  """(model before, model after one real SGD step, optimizer, scheduler): the EMA averages both."""
  before = verify.torchvision_model("resnet18", seed=3, num_classes=NUM_CLASSES)
  # Eval mode: a train-mode step on 2 images would set running variances from 2 values each.
  after = copy.deepcopy(before)
  optimizer = torch.optim.SGD(after.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
  generator = torch.Generator().manual_seed(0)
  x = torch.randn(2, 3, 32, 32, generator=generator)
  torch.nn.functional.cross_entropy(after(x), torch.tensor([1, 2])).backward()
  optimizer.step()
  scheduler.step()
  return before, after, optimizer, scheduler


def _write(torch, trained, layout, prefix, directory):
  """Writes the `layout` checkpoint of the wrapped model; returns (path, the EMA's plain module)."""
  from torch.optim import swa_utils
  import timm.utils
  before, after, optimizer, scheduler = trained
  model = _wrap(torch, after, prefix)
  ema_module = None
  path = os.path.join(directory, f"{layout}_{prefix or 'plain'}.pth")
  if layout == "state_dict":
    torch.save(model.state_dict(), path)
  elif layout.startswith("torchvision_train"):
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "lr_scheduler": scheduler.state_dict(), "epoch": 1, "args": _args()}
    if layout in HAS_EMA:  # references/classification/utils.py ExponentialMovingAverage
      ema = swa_utils.AveragedModel(_wrap(torch, before, prefix), use_buffers=True,
                                    multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9))
      ema.update_parameters(_wrap(torch, before, prefix))  # the first update copies
      ema.update_parameters(model)
      checkpoint["model_ema"] = ema.state_dict()
      ema_module = timm.utils.unwrap_model(ema)
    torch.save(checkpoint, path)
  elif layout.startswith("timm_train"):
    ema = None
    if layout in HAS_EMA:
      ema = timm.utils.ModelEmaV3(_wrap(torch, before, prefix), decay=0.9)
      ema.update(model)
      ema_module = timm.utils.unwrap_model(ema)
    # timm unwraps by default; identity keeps the prefixes a custom or older script leaves.
    saver = timm.utils.CheckpointSaver(model, optimizer, args=_args(), model_ema=ema,
                                       checkpoint_dir=directory, unwrap_fn=lambda m: m)
    saver.save_checkpoint(epoch=2, metric=71.5)
    path = os.path.join(directory, f"{layout}_{prefix or 'plain'}.pth.tar")
    os.replace(os.path.join(directory, "last.pth.tar"), path)
  else:
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "epoch": 1, "loss": 0.25}, path)
  return path, ema_module


def _assert_bitwise_equal(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def _differs(a, b) -> bool:
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("prefix", PREFIXES, ids=lambda p: p.rstrip(".") or "no_prefix")
@pytest.mark.parametrize("layout", LAYOUTS)
class TestLayouts:
  """Each layout x prefix converts exactly as the plain state_dict does, read with weights_only."""

  def test_converts_exactly(self, torch, trained, layout, prefix, tmp_path):
    path, ema_module = _write(torch, trained, layout, prefix, str(tmp_path))
    plain = convert.from_torchvision(trained[1].state_dict())
    _assert_bitwise_equal(convert.from_torchvision(path), plain)
    if layout in HAS_EMA:
      got = convert.from_torchvision(path, ema=True)
      _assert_bitwise_equal(got, convert.from_torchvision(ema_module.state_dict()))
      assert _differs(got, plain)  # else the choice of weights would be untested
    else:
      with pytest.raises(CheckpointError, match="no EMA weights") as e:
        convert.from_torchvision(path, ema=True)
      assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_eval_logits_match_torchvision(torch, trained, tmp_path):
  path, _ = _write(torch, trained, "torchvision_train_ema", "module._orig_mod.", str(tmp_path))
  variables = convert.from_torchvision(path)
  model = get_model("resnet18", num_classes=NUM_CLASSES)
  x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  agreement = verify.compare_logits(model.apply(variables, x), verify.run_torchvision(trained[1], x))
  # test_convert's parity bound: float32 with "highest" matmuls agrees to ~1e-6 relative.
  assert agreement.rel <= 1e-5 and agreement.top1 == 1.0, agreement


def test_only_ema_weights_are_not_taken_silently(torch, trained, tmp_path):
  path = tmp_path / "only_ema.pth"
  torch.save({"state_dict_ema": trained[0].state_dict(), "epoch": 3}, path)
  with pytest.raises(CheckpointError, match="only EMA weights.*--ema"):
    convert.from_torchvision(path)
  _assert_bitwise_equal(convert.from_torchvision(path, ema=True),
                        convert.from_torchvision(trained[0].state_dict()))


def _assert_one_line(error, *fragments):
  text = str(error)
  assert "\n" not in text and "\x1b" not in text, text
  for fragment in fragments:
    assert fragment in text, text


@pytest.mark.parametrize("zip_format", (True, False), ids=("zip", "legacy"))
def test_a_whole_pickled_model_says_how_to_save_its_state_dict(torch, trained, tmp_path, zip_format):
  path = tmp_path / "model.pth"
  torch.save(trained[0], path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(CheckpointError) as e:
    convert.from_torchvision(path)
  _assert_one_line(e.value, str(path), "whole pickled model (torchvision.models.resnet.ResNet)",
                   "torch.save(model.state_dict(), PATH)")


@pytest.mark.parametrize("zip_format", (True, False), ids=("zip", "legacy"))
def test_other_objects_are_refused_naming_the_global(torch, trained, tmp_path, zip_format):
  path = tmp_path / "odd.pth"
  # A Path in the args: harmless here, but weights_only allows no class it was not told about.
  torch.save({"model": trained[0].state_dict(), "args": _args(output_dir=pathlib.PurePosixPath("/o"))},
             path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(CheckpointError) as e:
    convert.from_torchvision(path)
  _assert_one_line(e.value, str(path), "pathlib.PurePosixPath")


def test_cli_ema_choice_and_errors(capsys, torch, trained, tmp_path):
  path, ema_module = _write(torch, trained, "torchvision_train_ema", "module.", str(tmp_path))
  from resnet_jax.training import checkpoints
  for flag, expected in (((), trained[1]), (("--ema",), ema_module)):
    out = str(tmp_path / f"converted{''.join(flag)}")
    assert cli.main(["convert", "--weights", path, "--out", out, *flag]) == 0
    variables, spec = checkpoints.load_variables(out)
    _assert_bitwise_equal(variables, convert.from_torchvision(expected.state_dict()))
    assert spec.source.get("ema", False) == bool(flag)
  capsys.readouterr()
  plain = tmp_path / "plain.pth"
  torch.save(trained[1].state_dict(), plain)
  code = cli.main(["convert", "--weights", str(plain), "--out", str(tmp_path / "x"), "--ema"])
  err = capsys.readouterr().err
  assert code == 2 and len(err.strip().splitlines()) == 1 and "no EMA weights" in err, err
  assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------
# Commands on each other's output: export -> convert, convert -> verify.

def _spec(name):
  from resnet_jax.weights.spec import ModelSpec
  if name == "digits_1ch_16px":  # the digits recipe's shape: grey, 16 px, its own statistics
    return ModelSpec("resnet20", 10, in_channels=1, model_overrides={"stage_sizes": [1, 1, 1]},
                     image_size=16, resize_size=16, mean_255=(84.0,), std_255=(105.0,),
                     class_names=tuple(f"digit {i}" for i in range(10)))
  if name == "rgb_16px":
    return ModelSpec("resnet18_cifar", 3, image_size=16, resize_size=20, mean_255=(60, 90, 120),
                     std_255=(50, 55, 60), class_names=("ant", "bee", "cat"))
  return ModelSpec.for_torchvision("resnet18", NUM_CLASSES, 232, {"kind": "test"})


def _random_variables(spec, seed=0):
  """Variables of `spec`'s model with random BatchNorm statistics (a swap would show)."""
  model = spec.build()
  x = np.zeros((1, spec.image_size, spec.image_size, spec.in_channels), np.float32)
  variables = jax.tree.map(np.asarray, model.init(jax.random.key(seed), x, train=False))
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32),
                       variables["batch_stats"])
  return {"params": variables["params"], "batch_stats": stats}


@pytest.mark.parametrize("suffix", (".pth", ".safetensors"))
@pytest.mark.parametrize("name", ("digits_1ch_16px", "rgb_16px", "torchvision_resnet18"))
def test_export_converts_back_with_its_spec(capsys, torch, tmp_path, name, suffix):
  from resnet_jax.training import checkpoints
  spec = _spec(name)
  variables = _random_variables(spec)
  checkpoints.save_variables(str(tmp_path / "model"), variables, spec)
  exported = str(tmp_path / f"exported{suffix}")
  assert cli.main(["export", "--checkpoint", str(tmp_path / "model"), "--out", exported]) == 0
  assert cli.main(["convert", "--weights", exported, "--out", str(tmp_path / "back")]) == 0
  back, back_spec = checkpoints.load_variables(str(tmp_path / "back"))
  _assert_bitwise_equal(back, variables)
  assert back_spec.differences(spec) == [] and back_spec.resize_size == spec.resize_size
  assert back_spec.class_names == spec.class_names
  if name == "torchvision_resnet18" and suffix == ".pth":  # the spec does not disturb torchvision
    model = verify.torchvision_model("resnet18", num_classes=NUM_CLASSES)
    model.load_state_dict(torch.load(exported, weights_only=True), strict=True)


def test_export_files_follow_the_umask(capsys, torch, tmp_path):
  from resnet_jax.training import checkpoints
  spec = _spec("digits_1ch_16px")
  checkpoints.save_variables(str(tmp_path / "model"), _random_variables(spec), spec)
  for umask in (0o022, 0o077, 0o002):
    old = os.umask(umask)
    try:
      for suffix in (".pth", ".safetensors"):
        out = tmp_path / f"{umask:o}{suffix}"
        assert cli.main(["export", "--checkpoint", str(tmp_path / "model"), "--out", str(out)]) == 0
        assert out.stat().st_mode & 0o777 == 0o666 & ~umask, (suffix, oct(out.stat().st_mode))
    finally:
      os.umask(old)
  assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("out, fragment", [
    ("out.npz", "unknown format"), ("out", "unknown format"),
    ("missing/out.pth", "no folder"), ("exists.safetensors", "exists")])
def test_export_refuses_in_one_line_and_writes_nothing(capsys, tmp_path, digest, out, fragment):
  from resnet_jax.training import checkpoints
  spec = _spec("digits_1ch_16px")
  checkpoints.save_variables(str(tmp_path / "model"), _random_variables(spec), spec)
  (tmp_path / "exists.safetensors").write_bytes(b"mine")
  before = digest(tmp_path)
  capsys.readouterr()
  code = cli.main(["export", "--checkpoint", str(tmp_path / "model"), "--out", str(tmp_path / out)])
  err = capsys.readouterr().err
  assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
  assert err.startswith("resnet-jax export: error: ")
  assert digest(tmp_path) == before


def test_verify_reads_a_converted_directory(capsys, torch, trained, tmp_path):
  path, _ = _write(torch, trained, "torchvision_train_ema", "module.", str(tmp_path))
  small = ["--no-photos", "--size", "64", "--batch", "2"]
  for flag in ((), ("--ema",)):
    out = str(tmp_path / f"converted{''.join(flag)}")
    assert cli.main(["convert", "--weights", path, "--out", out, *flag]) == 0
    capsys.readouterr()
    assert cli.main(["verify", "--weights", out, *small]) == 0
    assert "PASS" in capsys.readouterr().out
  assert cli.main(["verify", "--weights", path, "--ema", *small]) == 0  # the file itself
  assert "PASS" in capsys.readouterr().out
  from resnet_jax.training import checkpoints
  spec = _spec("digits_1ch_16px")
  checkpoints.save_variables(str(tmp_path / "digits"), _random_variables(spec), spec)
  code = cli.main(["verify", "--weights", str(tmp_path / "digits"), *small])
  err = capsys.readouterr().err
  assert code == 2 and len(err.strip().splitlines()) == 1 and "neither torchvision nor timm has a model" in err, err


def test_pretrained_and_predict_take_the_ema_weights(capsys, torch, trained, tmp_path):
  import json
  import resnet_jax
  from PIL import Image
  path, ema_module = _write(torch, trained, "timm_train_ema", "_orig_mod.", str(tmp_path))
  for ema, expected in ((False, trained[1]), (True, ema_module)):
    _, variables, _ = resnet_jax.pretrained(None, path, ema=ema)
    _assert_bitwise_equal(variables, convert.from_torchvision(expected.state_dict()))
  image = str(tmp_path / "grey.png")
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)).save(image)
  tops = {}
  for flag in ((), ("--ema",)):
    capsys.readouterr()
    assert cli.main(["predict", "--weights", path, "--json", "--top", "10", *flag, image]) == 0
    tops[flag] = [t["probability"] for t in json.loads(capsys.readouterr().out)["top"]]
  assert tops[()] != tops[("--ema",)]  # the EMA differs from the weights it averages
