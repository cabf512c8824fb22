"""The `resnet-jax` command line, run for real on resnet18 at small sizes."""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import types

import chex
import numpy as np
import pytest
from PIL import Image

from resnet_jax import cli
from resnet_jax.training import checkpoints
from resnet_jax.weights import convert, verify
from resnet_jax.data import input_pipeline, transforms


@pytest.fixture(scope="module")
def resnet18(torch):
  return verify.torchvision_model("resnet18", seed=7)


@pytest.fixture(scope="module")
def pth(resnet18, torch, tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / "finetuned.pth"
  torch.save(resnet18.state_dict(), path)
  return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  skimage_data = pytest.importorskip("skimage.data")
  directory = tmp_path_factory.mktemp("photos")
  paths = []
  for name in ("coffee", "chelsea"):
    paths.append(str(directory / f"{name}.jpg"))
    Image.fromarray(getattr(skimage_data, name)()).save(paths[-1], quality=95)
  return paths


def _run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_console_entry_point():
  # The real interpreter entry, as the console script runs it.
  result = subprocess.run([sys.executable, "-m", "resnet_jax.cli", "--help"], capture_output=True,
                          text=True, check=True)
  for command in ("convert", "verify", "predict", "export", "plot"):
    assert command in result.stdout


def test_verify_random_weights(capsys):
  code, out, err = _run(capsys, "verify", "--arch", "resnet18", "--weights", "random", "--batch", "2",
                        "--size", "64", "--no-photos")
  assert code == 0, err
  assert "random" in out and "max abs" in out and "PASS" in out


def test_verify_file_with_photos_and_failing_tolerance(capsys, pth):
  code, out, err = _run(capsys, "verify", "--weights", str(pth), "--batch", "2", "--size", "64")
  assert code == 0, err
  assert "inferred architecture: resnet18, num_classes=1000" in err  # information: stderr
  assert "photos" in out and "top-1 100.0%" in out and "PASS" in out
  code, out, _ = _run(capsys, "verify", "--arch", "resnet18", "--weights", str(pth), "--batch", "2",
                      "--size", "64", "--no-photos", "--rtol", "1e-12")
  assert code == 1 and "FAIL" in out


def test_convert_export_round_trip(capsys, pth, resnet18, torch, tmp_path):
  out_dir = tmp_path / "ckpt"
  code, out, err = _run(capsys, "convert", "--weights", str(pth), "--out", str(out_dir))
  assert code == 0, err
  variables, spec = checkpoints.load_variables(str(out_dir))
  assert spec.arch == "resnet18" and spec.num_classes == 1000 and spec.in_channels == 3
  assert spec.class_names == transforms.imagenet_classes() and spec.resize_size == 256
  assert spec.source["file"] == str(pth) and spec.source["head"] == "converted"
  assert spec.source["sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
  chex.assert_trees_all_equal(variables, convert.from_torchvision(resnet18))

  for name in ("model.pth", "model.safetensors"):
    exported = tmp_path / name
    code, out, err = _run(capsys, "export", "--checkpoint", str(out_dir), "--out", str(exported))
    assert code == 0, err
    state = (torch.load(exported, weights_only=True) if name.endswith(".pth")
             else {k: torch.from_numpy(v) for k, v in convert.load_state_dict(exported).items()})
    fresh = verify.torchvision_model("resnet18")
    fresh.load_state_dict(state, strict=True)
    for key, value in resnet18.state_dict().items():
      if not key.endswith("num_batches_tracked"):
        assert torch.equal(fresh.state_dict()[key], value), key
  code, _, err = _run(capsys, "export", "--checkpoint", str(out_dir), "--out", str(exported))
  assert code == 2 and "exists" in err


def test_convert_with_a_new_head(capsys, pth, tmp_path):
  code, out, err = _run(capsys, "convert", "--arch", "resnet18", "--weights", str(pth),
                        "--out", str(tmp_path / "ckpt"), "--num-classes", "10")
  assert code == 0, err
  variables, spec = checkpoints.load_variables(str(tmp_path / "ckpt"))
  assert variables["params"]["fc"]["kernel"].shape == (512, 10)
  assert spec.num_classes == 10 and spec.source["head"].startswith("new") and spec.class_names == ()


def test_predict_prints_torchvision_s_top5(capsys, pth, photos, resnet18, torchvision, torch, tmp_path):
  code, out, err = _run(capsys, "predict", "--arch", "resnet18", "--weights", str(pth), *photos)
  assert code == 0, err
  lines = out.splitlines()
  assert lines[0] == photos[0] and len(lines) == 12
  preset = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
  with torch.no_grad():
    logits = resnet18(torch.stack([preset(Image.open(p)) for p in photos]))
  names = transforms.imagenet_classes()
  for i in range(2):
    top = torch.topk(logits[i], 5).indices.tolist()
    assert [line.split("(")[-1].rstrip(")") for line in lines[6 * i + 1:6 * i + 6]] == \
        [str(k) for k in top]
    assert f"{names[top[0]]} ({top[0]})" in lines[6 * i + 1]

  # The same from a converted checkpoint directory.
  assert _run(capsys, "convert", "--weights", str(pth), "--out", str(tmp_path / "ckpt"))[0] == 0
  code, out2, err = _run(capsys, "predict", "--weights", str(tmp_path / "ckpt"), *photos)
  assert code == 0, err
  assert out2 == out

  code, out3, err = _run(capsys, "predict", "--json", "--top", "3", "--weights",
                         str(tmp_path / "ckpt"), *photos)
  assert code == 0, err
  records = [json.loads(line) for line in out3.splitlines()]  # one object per image
  assert [r["image"] for r in records] == photos
  probabilities = torch.softmax(logits, -1)
  for record, p in zip(records, probabilities):
    top = torch.topk(p, 3)
    assert [t["class"] for t in record["top"]] == top.indices.tolist()
    assert [t["name"] for t in record["top"]] == [names[k] for k in top.indices.tolist()]
    # torch and our float32 softmax on the same weights: logits agree to ~1e-5 relative.
    np.testing.assert_allclose([t["probability"] for t in record["top"]], top.values.numpy(),
                               rtol=1e-3, atol=1e-5)


def test_errors_are_one_line_and_exit_2(capsys, resnet18, torch, tmp_path):
  path = tmp_path / "resnet18.pth"
  torch.save(resnet18.state_dict(), path)
  code, _, err = _run(capsys, "convert", "--arch", "resnet34", "--weights", str(path),
                      "--out", str(tmp_path / "a"))
  assert code == 2 and "missing keys" in err and "look like resnet18" in err
  path.write_bytes(path.read_bytes()[:1000])
  code, _, err = _run(capsys, "convert", "--weights", str(path), "--out", str(tmp_path / "b"))
  assert code == 2 and "not a readable PyTorch checkpoint" in err
  code, _, err = _run(capsys, "verify", "--weights", "IMAGENET1K_V1")
  assert code == 2 and "name the architecture" in err
  code, _, err = _run(capsys, "predict", "--arch", "resnet18", "--weights", "IMAGENET1K_V1", "x.jpg")
  assert code == 2 and "no image file at x.jpg" in err
  image = tmp_path / "x.png"
  Image.new("RGB", (8, 8)).save(image)
  code, _, err = _run(capsys, "predict", "--arch", "resnet50", "--weights", "IMAGENET1K_V3", str(image))
  assert code == 2 and "unknown weights 'IMAGENET1K_V3'" in err
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_plot_delegates_to_the_plot_module(capsys, monkeypatch, tmp_path):
  calls = []
  fake = types.ModuleType("resnet_jax.training.plot")
  fake.plot_workdir = lambda workdir, out, error_scale: calls.append((workdir, out, error_scale)) or out
  monkeypatch.setitem(sys.modules, "resnet_jax.training.plot", fake)
  code, out, _ = _run(capsys, "plot", str(tmp_path), "--out", str(tmp_path / "curves.png"))
  assert code == 0 and calls == [(str(tmp_path), str(tmp_path / "curves.png"), "log")]
  assert "curves.png" in out


def test_evaluate_passes_typed_arguments_to_the_library(capsys, monkeypatch):
  from resnet_jax.training import evaluate
  calls = []
  def fake(checkpoint, dataset, protocol, **kwargs):
    calls.append((checkpoint, dataset, protocol, kwargs))
    return types.SimpleNamespace(count=7, views=10, errors={1: 50.0, 5: 25.0}, split="test")
  monkeypatch.setattr(evaluate, "evaluate", fake)
  code, out, _ = _run(capsys, "evaluate", "--checkpoint", "ckpt", "--dataset", "digits", "--protocol",
                      "ten_crop", "--scales", "8", "11", "--mean", "84", "--limit", "7")
  assert code == 0 and len(calls) == 1
  checkpoint, dataset, protocol, kwargs = calls[0]
  assert (checkpoint, dataset, protocol) == ("ckpt", "digits", "ten_crop")
  assert kwargs["scales"] == [8, 11] and kwargs["mean"] == [84.0] and kwargs["limit"] == 7
  assert kwargs["split"] is None and kwargs["average"] == "softmax"
  assert out.strip() == ("ckpt on digits/test (7 images), 10-crop testing (10 views, softmax average): "
                         "top-1 error 50.00%, top-5 error 25.00%")


def _subcommands() -> dict:
  parser = cli.build_parser()
  return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_has_help_with_its_default(capsys):
  for name, parser in _subcommands().items():
    with pytest.raises(SystemExit) as exit_info:
      cli.main([name, "--help"])
    out, _ = capsys.readouterr()
    assert exit_info.value.code == 0 and out.startswith(f"usage: resnet-jax {name}"), name
    formatter = cli.HelpFormatter(parser.prog)
    for action in parser._actions:
      if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        continue
      label = f"{name} {'/'.join(action.option_strings) or action.dest}"
      assert action.help, f"{label} has no help"
      flag = action.nargs == 0  # store_true: on or off, nothing to default
      if action.option_strings and not action.required and not flag:
        help_text = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in help_text, f"{label}: the help does not state the default"
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--version"])
  assert exit_info.value.code == 0
  from resnet_jax import __version__
  assert capsys.readouterr().out.strip() == f"resnet-jax {__version__}"


def _assert_one_line_error(capsys, name, argv):
  try:
    code = cli.main(argv)
  except SystemExit as e:  # argparse's usage errors
    code = e.code
  out, err = capsys.readouterr()
  assert code not in (0, None), (argv, out)
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
  assert err.startswith(f"resnet-jax {name}: error: "), (argv, err)


def test_user_errors_are_one_line_on_stderr(capsys, tmp_path):
  for name in _subcommands():  # an unknown option, for every subcommand
    _assert_one_line_error(capsys, name, [name, "--no-such-option"])
  missing = str(tmp_path / "missing")
  Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
  for argv in (["convert", "--weights", missing + ".pth", "--out", str(tmp_path / "out")],
               ["verify", "--weights", "random"],
               ["predict", "--weights", missing, str(tmp_path / "x.png")],
               ["export", "--checkpoint", missing, "--out", str(tmp_path / "m.safetensors")],
               ["evaluate", "--checkpoint", missing, "--dataset", "digits"],
               ["plot", str(tmp_path)],
               ["train", "--config", "digts", "--workdir", str(tmp_path / "run")],
               ["train", "--config", "digits", "--workdir", str(tmp_path / "run"), "--config.lerning_rate=1"],
               ["train", "--config", missing + ".py", "--workdir", str(tmp_path / "run")]):
    _assert_one_line_error(capsys, argv[0], argv)
  assert sorted(os.listdir(tmp_path)) == ["x.png"]  # nothing written on the way out


# ----------------------------------------------------------------------------------------------
# Every command on every directory another command wrote, fed as the model was trained.

def _predictions(out):
  """{image: [(probability, name, index), ...]} from predict's output."""
  result, current = {}, None
  for line in out.splitlines():
    if not line.startswith("  "):
      current = result.setdefault(line, [])
      continue
    p, rest = line.split(maxsplit=1)
    name, index = rest.rsplit(" (", 1)
    current.append((float(p), name, int(index.rstrip(")"))))
  return result


def _training_eval_probabilities(workdir, pixels, size, crop_fraction, mean, std):
  """Softmax of the run's model on `pixels` preprocessed as training evaluated (input_pipeline)."""
  import jax
  variables, spec = checkpoints.load_variables(workdir)
  x = input_pipeline.resize_center_crop(pixels, size, crop_fraction).astype(np.float64)
  x = ((x - np.asarray(mean)) / np.asarray(std)).astype(np.float32)[None]
  return np.asarray(jax.nn.softmax(spec.build().apply(variables, x)))[0]


def test_predict_and_export_a_digits_workdir(capsys, digits_workdir, digest, tmp_path):
  before = digest(digits_workdir)
  digit = input_pipeline.digits("test").images[0]  # 8x8x1 uint8
  image = tmp_path / "digit.png"
  Image.fromarray(digit[..., 0]).save(image)
  code, out, err = _run(capsys, "predict", "--weights", digits_workdir, "--top", "3", str(image))
  assert code == 0, err
  # The run's center evaluation: 8 -> 16 pixels (crop fraction 1), one channel, mean 84, std 105.
  want = _training_eval_probabilities(digits_workdir, digit, 16, 1.0, (84.0,), (105.0,))
  top = np.argsort(-want)[:3]
  assert _predictions(out)[str(image)] == [(pytest.approx(want[k], abs=1e-4), str(k), k) for k in top]

  import jax
  exported = tmp_path / "digits.safetensors"
  code, out, err = _run(capsys, "export", "--checkpoint", digits_workdir, "--out", str(exported))
  assert code == 0, err
  from safetensors import safe_open
  variables, spec = checkpoints.load_variables(digits_workdir)
  with safe_open(str(exported), "numpy") as f:
    np.testing.assert_array_equal(f.get_tensor("conv1.weight"),
                                  variables["params"]["conv1"]["kernel"].transpose(3, 2, 0, 1))
    assert f.get_tensor("conv1.weight").shape == (16, 1, 3, 3)
    assert json.loads(f.metadata()["resnet_jax.spec"]) == spec.to_json()

  # Back again: the export converts and predicts as the model it describes (1 channel, its mean/std),
  # not as a 3-channel torchvision ResNet with ImageNet's preprocessing.
  converted = tmp_path / "converted"
  code, out, err = _run(capsys, "convert", "--weights", str(exported), "--out", str(converted))
  assert code == 0, err
  variables_back, spec_back = checkpoints.load_variables(str(converted))
  assert spec_back.differences(spec) == [] and spec_back.class_names == spec.class_names
  assert spec_back.source["kind"] == "export"
  jax.tree.map(np.testing.assert_array_equal, variables_back, variables)
  for weights in (str(converted), str(exported)):
    code, out, err = _run(capsys, "predict", "--weights", weights, "--top", "3", str(image))
    assert code == 0, err
    assert _predictions(out)[str(image)] == [(pytest.approx(want[k], abs=1e-4), str(k), k) for k in top]
  code, out, err = _run(capsys, "convert", "--arch", "resnet32", "--weights", str(exported),
                        "--out", str(tmp_path / "wrong"))
  _one_line_error(code, err, "holds a resnet20, not a resnet32")
  assert not os.path.exists(tmp_path / "wrong")
  assert digest(digits_workdir) == before


def test_predict_feeds_a_folder_run_its_size_statistics_and_class_names(capsys, folder_run, digest):
  workdir, root = folder_run
  before = digest(workdir)
  image = os.path.join(root, "val", "cat", "0.png")
  code, out, err = _run(capsys, "predict", "--weights", workdir, "--top", "3", image)
  assert code == 0, err
  # 20x24 -> shorter side 20 (16 / 0.8) -> center 16x16, the run's own mean and std.
  want = _training_eval_probabilities(workdir, np.asarray(Image.open(image)), 16, 0.8,
                                      (100.0, 110.0, 120.0), (50.0, 60.0, 70.0))
  names = ("ant", "bee", "cat")
  assert _predictions(out)[image] == [(pytest.approx(want[k], abs=1e-4), names[k], k)
                                      for k in np.argsort(-want)]
  assert digest(workdir) == before


def _one_line_error(code, err, *fragments):
  """Exit 2, and the error is the last line of stderr, whole (informational log lines may precede it)."""
  assert code == 2
  assert "Traceback" not in err and err.endswith("\n"), err
  last = err.splitlines()[-1]
  assert last.startswith("resnet-jax ") and ": error: " in last, err
  for fragment in fragments:
    assert fragment in last, err


def test_bad_images_are_one_line_errors_naming_the_file(capsys, digits_workdir, digest, tmp_path):
  before = digest(digits_workdir)
  good = []
  for i in range(2):
    good.append(str(tmp_path / f"good{i}.jpg"))
    Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(good[-1], quality=95)
  truncated = tmp_path / "truncated.jpg"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(truncated)
  truncated.write_bytes(truncated.read_bytes()[:600])
  code, out, err = _run(capsys, "predict", "--weights", digits_workdir, good[0], str(truncated), good[1])
  _one_line_error(code, err, f"{truncated}:", "truncated")
  assert good[0] not in err and good[1] not in err

  # PIL refuses to decode more than 2 x 89.5 million pixels; the header alone says 20000 x 20000.
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(_png_header_claiming(20000, 20000))
  _one_line_error(*_run(capsys, "predict", "--weights", digits_workdir, str(bomb))[::2], f"{bomb}:",
                  "too large")
  assert digest(digits_workdir) == before


def _png_header_claiming(width, height):
  """A 1x1 grey PNG whose IHDR chunk claims `width` x `height`."""
  import io
  import struct
  import zlib
  buffer = io.BytesIO()
  Image.new("L", (1, 1)).save(buffer, format="PNG")
  data = bytearray(buffer.getvalue())
  ihdr = data.index(b"IHDR")
  data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
  data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
  return bytes(data)


def test_debug_shows_the_traceback(capsys):
  with pytest.raises(cli._Error, match="no image file at x.jpg"):
    cli.main(["--debug", "predict", "--arch", "resnet18", "--weights", "IMAGENET1K_V1", "x.jpg"])
  _one_line_error(*_run(capsys, "predict", "--arch", "resnet18", "--weights", "IMAGENET1K_V1",
                        "x.jpg")[::2], "no image file at x.jpg")


def test_conversion_refuses_integer_and_nonfinite_weights(capsys, resnet18, tmp_path):
  from safetensors.numpy import save_file
  state = {k: v.numpy() for k, v in resnet18.state_dict().items()}
  integers = tmp_path / "integers.safetensors"
  save_file(dict(state, **{"fc.bias": state["fc.bias"].astype(np.int64)}), str(integers))
  nan = tmp_path / "nan.safetensors"
  bad = state["layer1.0.conv1.weight"].copy()
  bad[0, 0, 0, 0] = np.nan
  save_file(dict(state, **{"layer1.0.conv1.weight": bad}), str(nan))
  inputs = {p: p.read_bytes() for p in (integers, nan)}
  _one_line_error(*_run(capsys, "convert", "--weights", str(integers), "--out",
                        str(tmp_path / "a"))[::2], "fc.bias (int64)")
  _one_line_error(*_run(capsys, "convert", "--weights", str(nan), "--out", str(tmp_path / "b"))[::2],
                  "layer1.0.conv1.weight (1 of", "--allow-nonfinite")
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
  assert {p: p.read_bytes() for p in inputs} == inputs
  code, _, err = _run(capsys, "convert", "--weights", str(nan), "--out", str(tmp_path / "c"),
                      "--allow-nonfinite")
  assert code == 0, err
  assert np.isnan(checkpoints.load_variables(str(tmp_path / "c"))[0]["params"]["layer1_0"]["conv1"][
      "kernel"]).sum() == 1


# ----------------------------------------------------------------------------------------------
# Every numeric option of every command is range-checked at parse time, in one line.

def _subparsers(parser):
  actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
  return dict(actions[0].choices) if actions else {}


def _numeric_options():
  """(command, option, action) for every option that takes a number, found by walking the parsers:
  a typed one, or one whose default is a number (an option added without a type)."""
  out = []
  for command, sub in sorted(_subparsers(cli.build_parser()).items()):
    for action in sub._actions:
      default_is_number = isinstance(action.default, (int, float)) and not isinstance(action.default,
                                                                                       bool)
      if action.option_strings and (action.type is not None or default_is_number):
        out.append(pytest.param(command, action.option_strings[-1], action,
                                id=f"{command}{action.option_strings[-1]}"))
  return out


NUMERIC = _numeric_options()


def test_the_walk_finds_the_issues_options():
  found = {(p.values[0], p.values[1]) for p in NUMERIC}
  assert {("predict", "--top"), ("evaluate", "--limit"), ("evaluate", "--per-device-batch"),
          ("prepare", "--quality"), ("verify", "--min-top1"), ("convert", "--num-classes")} <= found


def _out_of_range(number: cli.Number) -> list:
  bad = ["nan", "inf", "x"]
  if number.low is not None:
    bad.append(str(number.low if number.low_open else number.low - 1))
  if number.high is not None:
    bad.append(str(number.high + 1))
  return bad


@pytest.mark.parametrize("command, option, action", NUMERIC)
def test_a_numeric_option_out_of_range_is_one_line_naming_it(command, option, action, capsys):
  assert isinstance(action.type, cli.Number), (
      f"{command} {option}: give it a range, e.g. type=cli.POSITIVE_INT (resnet_jax/cli.py)")
  assert action.default is None or action.type(str(action.default)) == action.default
  for text in _out_of_range(action.type):
    with pytest.raises(SystemExit) as exit_:
      cli.main([command, f"{option}={text}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: argument {option}: expected " in err, (text, err)
    assert f"got {text!r}" in err


def test_the_issues_options_in_range_still_parse():
  parser = cli.build_parser()
  args, _ = parser.parse_known_args(["predict", "--weights", "w", "--top", "3", "x.png"])
  assert args.top == 3
  args, _ = parser.parse_known_args(["evaluate", "--checkpoint", "c", "--dataset", "digits",
                                     "--limit", "5", "--std", "0.5", "--mean", "-1"])
  assert (args.limit, args.std, args.mean) == (5, [0.5], [-1.0])


def test_an_error_is_printed_without_terminal_escape_codes(monkeypatch, capsys):
  def fails(args):
    raise ValueError("\x1b[1mWeights only load failed.\x1b[0m Re-running \x1b[31m`torch.load`\x1b[0m")
  monkeypatch.setattr(cli, "cmd_plot", fails)
  assert cli.main(["plot", "somewhere"]) == 2
  err = capsys.readouterr().err
  assert err == "resnet-jax plot: error: Weights only load failed. Re-running `torch.load`\n"


@pytest.mark.parametrize("body, line, kind", [
    ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict() +\n", 3,
     "SyntaxError"),
    ("x = 1\nraise RuntimeError('boom\\nsecond line')\n", 2, "RuntimeError"),
    ("from configs import digits\n\ndef get_config():\n  c = digits.get_config()\n"
     "  c.lerning_rate = 3\n  return c\n", 5, "AttributeError"),
    ("def get_config():\n  return {}[0]\n", 2, "KeyError"),
], ids=["syntax", "raises_at_import", "locked_key", "raises_in_get_config"])
def test_a_config_file_that_fails_is_one_line_naming_file_and_line(tmp_path, capsys, body, line, kind):
  path = tmp_path / "mine.py"
  path.write_text(body)
  assert cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"resnet-jax train: error: --config {path}: {path}, line {line}: {kind}: ")
  assert err.count("\n") == 1 and not os.path.exists(tmp_path / "w")


def test_an_unknown_or_unprepared_tfds_dataset_is_one_line(tmp_path, capsys):
  pytest.importorskip("tensorflow_datasets")
  base = ["train", "--config", "digits", "--config.source=tfds", "--config.progress_bar=False"]
  assert cli.main(base + ["--workdir", str(tmp_path / "a"), "--config.dataset=no_such_set"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("resnet-jax train: error: 'no_such_set' is not a TFDS dataset name")
  assert err.count("\n") == 1
  empty = tmp_path / "empty"
  assert cli.main(base + ["--workdir", str(tmp_path / "b"), "--config.dataset=mnist",
                          f"--config.data_dir={empty}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"resnet-jax train: error: TFDS dataset 'mnist' is not prepared in {empty}: "
                        "prepare it once") and "already prepared" not in err
  assert err.count("\n") == 1
