"""Every command on every other command's output: producers (a `convert --out` directory, a training
workdir, `export`ed .pth and .safetensors files of both) times consumers (predict, evaluate, export,
verify, convert, init_from), each cell one in-process `cli.main` call (init_from: one training step).

A cell that does not apply (a command that reads only directories given a file, `verify` without a
torchvision model to compare with) is listed in NOT_APPLICABLE with the reason; every other cell
runs. Each producer is built once per module.
"""

import os

import chex
import numpy as np
import pytest
from PIL import Image

from resnet_jax import cli
from resnet_jax.training import checkpoints, train_lib

# The ImageNet classes the image folder uses, so that a converted 1000-class model's recorded class
# names label it (the folder's classes are matched to the model's by name).
FOLDER_CLASSES = ("tench", "goldfish")

PRODUCERS = ("convert_dir", "workdir", "convert_dir.pth", "convert_dir.safetensors", "workdir.pth",
             "workdir.safetensors")
CONSUMERS = ("predict", "evaluate", "export", "verify", "convert", "init_from")
_FILE_ONLY = "reads a checkpoint directory or workdir; a torchvision file is converted first"
NOT_APPLICABLE = {
    **{(p, c): _FILE_ONLY for p in PRODUCERS if "." in p for c in ("evaluate", "export", "init_from")},
    ("workdir", "verify"): "a workdir has no torchvision model to compare with",
    ("workdir", "convert"): "convert reads torchvision weights; a workdir is already converted",
    ("convert_dir", "convert"): "convert reads torchvision weights; the directory is already converted",
    ("workdir.pth", "verify"): "torchvision has no 1-channel resnet20 to compare with",
    ("workdir.safetensors", "verify"): "torchvision has no 1-channel resnet20 to compare with",
}

def _cells():
  for producer in PRODUCERS:
    for consumer in CONSUMERS:
      if (producer, consumer) in NOT_APPLICABLE:
        continue
      yield pytest.param(producer, consumer, id=f"{producer}-{consumer}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """An RGB image folder, ROOT/{train,val}/<ImageNet class>/*.png, 24x20 pixels."""
  root = tmp_path_factory.mktemp("matrix_folder")
  rng = np.random.default_rng(0)
  for split, count in (("train", 4), ("val", 2)):
    for name in FOLDER_CLASSES:
      os.makedirs(root / split / name)
      for i in range(count):
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / name / f"{i}.png")
  return str(root)


@pytest.fixture(scope="module")
def products(tmp_path_factory, torch, digits_workdir):
  """{producer: path} and {producer: reference variables}: what each producer wrote, and the
  variables it must hold (those of the model it was made from)."""
  from resnet_jax.weights import verify
  base = tmp_path_factory.mktemp("matrix")
  pth = str(base / "torchvision.pth")
  torch.save(verify.torchvision_model("resnet18", seed=3).state_dict(), pth)
  paths = {"convert_dir": str(base / "converted"), "workdir": digits_workdir}
  assert cli.main(["convert", "--weights", pth, "--out", paths["convert_dir"]]) == 0
  for source in ("convert_dir", "workdir"):
    for ext in ("pth", "safetensors"):
      paths[f"{source}.{ext}"] = str(base / f"{source}.{ext}")
      assert cli.main(["export", "--checkpoint", paths[source], "--out", paths[f"{source}.{ext}"]]) == 0
  references = {name: checkpoints.load_variables(paths[name.split(".")[0]])[0] for name in PRODUCERS}
  return paths, references, base


def _image(base, channels: int) -> str:
  path = str(base / f"image{channels}.png")
  pixels = np.random.default_rng(1).integers(0, 256, (30, 26, 3), dtype=np.uint8)
  Image.fromarray(pixels if channels == 3 else pixels[..., 0]).save(path)
  return path


def _run(argv, capsys) -> str:
  code = cli.main(argv)
  out, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  return out


def _train_from(path, tmp_path, tiny_config, folder, rgb: bool) -> dict:
  """One step at learning rate 0 from `path`: the run's parameters are then the ones it read."""
  import ml_collections
  config = tiny_config(init_from=path, num_train_steps=1, checkpoint_every_steps=1,
                       base_learning_rate=0.0, weight_decay=0.0)
  if rgb:
    config.model, config.model_overrides = "resnet18", ml_collections.ConfigDict({})
    config.source, config.data_dir, config.train_split, config.eval_split = "folder", folder, "train", "val"
    config.image_size, config.mean, config.std = 16, (124.0, 116.0, 104.0), (58.0, 57.0, 57.0)
    config.batch_size = 8
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(config, workdir)
  return checkpoints.load_variables(workdir)[0]


@pytest.mark.parametrize("producer, consumer", list(_cells()))
def test_a_command_reads_another_commands_output(producer, consumer, products, folder, tiny_config,
                                                 tmp_path, capsys):
  paths, references, base = products
  path, reference = paths[producer], references[producer]
  rgb = producer.startswith("convert_dir")
  if consumer == "predict":
    image = _image(base, 3 if rgb else 1)
    out = _run(["predict", "--weights", path, "--top", "2", image], capsys)
    assert out.splitlines()[0] == image and len(out.splitlines()) == 3
  elif consumer == "evaluate":
    data = (["--dataset", "folder", "--data-dir", folder, "--image-size", "16", "--resize-size", "16"]
            if rgb else ["--dataset", "digits"])
    out = _run(["evaluate", "--checkpoint", path, *data, "--limit", "4"], capsys)
    assert "(4 images)" in out and "top-1 error" in out
  elif consumer == "export":
    out_file = str(tmp_path / "again.safetensors")
    _run(["export", "--checkpoint", path, "--out", out_file], capsys)
    from safetensors.numpy import load_file
    exported = load_file(out_file)
    assert np.array_equal(exported["fc.weight"], np.asarray(reference["params"]["fc"]["kernel"]).T)
  elif consumer == "verify":
    out = _run(["verify", "--weights", path, "--size", "32", "--batch", "2", "--no-photos"], capsys)
    assert out.strip().splitlines()[-1].startswith("PASS")
  elif consumer == "convert":
    out_dir = str(tmp_path / "converted_again")
    _run(["convert", "--weights", path, "--out", out_dir], capsys)
    chex.assert_trees_all_equal(checkpoints.load_variables(out_dir)[0], reference)
  elif consumer == "init_from":
    started = _train_from(path, tmp_path, tiny_config, folder, rgb)
    ours = {k: v for k, v in started["params"].items() if k != "fc"}  # fc: another class count
    chex.assert_trees_all_equal(ours, {k: v for k, v in reference["params"].items() if k != "fc"})
  else:
    raise AssertionError(consumer)


def test_every_cell_is_run_or_says_why_not():
  cells = {(p, c) for p in PRODUCERS for c in CONSUMERS}
  assert set(NOT_APPLICABLE) <= cells
  assert len(list(_cells())) + len(NOT_APPLICABLE) == len(cells)
