"""transformers' ResNet layout -> our models: parity with transformers' PyTorch model, round trips, refusals."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from resnet_jax import cli
from resnet_jax.weights import convert, convert_hf, verify
from resnet_jax.models.resnet import get_model

BATCH, SIZE, RTOL = 2, 64, 1e-5
# (arch, layer_type, depths): every zoo model transformers' ResNetConfig can express.
EXPRESSIBLE = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


@pytest.fixture(scope="module")
def transformers(torch):
  return pytest.importorskip("transformers")


def _config(transformers, arch, **changes):
  layer_type, depths = EXPRESSIBLE[arch]
  expansion = 4 if layer_type == "bottleneck" else 1
  options = dict(layer_type=layer_type, depths=list(depths),
                 hidden_sizes=[w * expansion for w in (64, 128, 256, 512)], num_labels=10)
  options.update(changes)
  return transformers.ResNetConfig(**options)


def _randomised(model, torch, seed):
  """Random weights and random BatchNorm affine and running statistics (a fresh model's 1, 0, 0, 1
  would hide a swapped or dropped statistic)."""
  with torch.random.fork_rng(devices=[]), torch.no_grad():
    torch.manual_seed(seed)
    for m in model.modules():
      if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
      elif isinstance(m, torch.nn.Linear):
        m.weight.normal_(0.0, 0.05)
        m.bias.normal_(0.0, 0.05)
  return model.eval()


def _run(torch, model, x):
  with torch.no_grad():
    out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), output_hidden_states=True)
  hidden = [h.numpy().transpose(0, 2, 3, 1) for h in out.hidden_states]
  return getattr(out, "logits", None), hidden, out


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_parity_with_transformers(torch, transformers, arch):
  hf = _randomised(transformers.ResNetForImageClassification(_config(transformers, arch)), torch,
                   seed=len(arch))
  state = {k: v.clone() for k, v in hf.state_dict().items()}
  variables = convert.from_torchvision(hf)  # the architecture is inferred from keys and shapes
  assert convert.infer_arch(convert.state_dict_of(hf)) == convert.Inferred(arch, 10)

  # Round trip: exact, and transformers' model loads it strictly (num_batches_tracked aside).
  back = convert_hf.to_transformers(variables, arch)
  assert set(back) == set(state)
  for key, value in state.items():
    if not key.endswith("num_batches_tracked"):
      assert torch.equal(back[key], value), key
  chex.assert_trees_all_equal(convert_hf.from_transformers(back, arch), variables, strict=True)
  hf.load_state_dict(back, strict=True)

  x = np.random.default_rng(0).standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32)
  logits, hidden, _ = _run(torch, hf, x)
  features = jax.jit(lambda v, x: get_model(arch, num_classes=10).apply(
      v, x, return_features=True))(variables, x)
  agreement = verify.compare_logits(features["logits"], logits.numpy())
  assert agreement.rel < RTOL and agreement.top1 == 1.0, agreement
  # transformers' hidden states: the stem (after the max-pool), then each stage's output.
  for name, theirs in zip(("stem", "layer1", "layer2", "layer3", "layer4"), hidden, strict=True):
    ours = np.asarray(features[name])
    assert ours.shape == theirs.shape, name
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=RTOL * np.max(np.abs(theirs)),
                               err_msg=name)


def test_headless_resnet_model(torch, transformers):
  """`ResNetModel` (no 'resnet.' prefix, no classifier) converts to a headless model and back."""
  hf = _randomised(transformers.ResNetModel(_config(transformers, "resnet18")), torch, seed=3)
  variables = convert.from_torchvision(hf.state_dict())
  assert "fc" not in variables["params"]
  back = convert_hf.to_transformers(variables, "resnet18", headless_prefix=True)
  hf.load_state_dict(back, strict=True)
  x = np.random.default_rng(1).standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32)
  _, _, out = _run(torch, hf, x)
  pooled = get_model("resnet18", num_classes=None).apply(variables, x)
  np.testing.assert_allclose(pooled, out.pooler_output.numpy()[:, :, 0, 0], rtol=0,
                             atol=RTOL * float(out.pooler_output.abs().max()))


@pytest.mark.parametrize("arch", sorted(EXPRESSIBLE))
def test_every_expressible_depth_is_inferred(torch, transformers, arch):
  """Keys and shapes (a model on torch's meta device: no memory, no init) name the right model."""
  with torch.device("meta"):
    hf = transformers.ResNetForImageClassification(_config(transformers, arch))
  shapes = {k: np.empty(0, np.float32) for k in hf.state_dict()}
  renamed = convert_hf.to_torchvision_keys(
      {k: v for k, v in zip(shapes, hf.state_dict().values())})
  assert convert.infer_arch(renamed) == convert.Inferred(arch, 10)
  expected = {k for k in convert.torchvision_layout(arch, 10)}
  found = {k for k in renamed if not k.endswith("num_batches_tracked")}
  assert found == expected


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_sizes=[128, 256, 512, 1024]), "stage widths"),
    (dict(embedding_size=32, hidden_sizes=[32, 128, 256, 512]), "stem of 32 channels"),
    (dict(depths=[1, 1, 1, 1]), "no torchvision ResNet has BasicBlock blocks (1, 1, 1, 1)"),
], ids=["stage_widths", "stem_width", "depths"])
def test_refuses_what_no_model_is_in_one_line(torch, transformers, changes, message):
  hf = transformers.ResNetForImageClassification(_config(transformers, "resnet18", **changes))
  with pytest.raises(convert.ConversionError, match=message.replace("(", r"\(").replace(")", r"\)")
                     ) as e:
    convert.from_torchvision(hf.state_dict())
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("changes, key", [
    (dict(downsample_in_bottleneck=True), "downsample_in_bottleneck"),
    (dict(downsample_in_first_stage=True), "downsample_in_first_stage"),
    (dict(hidden_act="gelu"), "hidden_act"),
], ids=["stride_on_1x1", "strided_first_stage", "gelu"])
def test_cli_reads_config_beside_the_weights(torch, transformers, tmp_path, capsys, changes, key):
  """What the weights cannot show (strides, activation) is refused from config.json, exit 2."""
  hf = transformers.ResNetForImageClassification(_config(transformers, "resnet50", **changes))
  hf.save_pretrained(tmp_path / "hf")
  capsys.readouterr()  # transformers' progress bar
  code = cli.main(["convert", "--weights", str(tmp_path / "hf" / "model.safetensors"),
                   "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  errors = [line for line in err.splitlines() if "error" in line]
  assert code == 2 and len(errors) == 1 and key in errors[0] and "Traceback" not in err, err
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_cli_converts_a_transformers_file(torch, transformers, tmp_path, capsys, filename):
  hf = _randomised(transformers.ResNetForImageClassification(_config(transformers, "resnet18")),
                   torch, seed=4)
  hf.save_pretrained(tmp_path / "hf", safe_serialization=filename.endswith(".safetensors"))
  if not (tmp_path / "hf" / filename).exists():  # transformers 5 may always write safetensors
    torch.save(hf.state_dict(), tmp_path / "hf" / filename)
  assert cli.main(["convert", "--weights", str(tmp_path / "hf" / filename),
                   "--out", str(tmp_path / "out")]) == 0
  assert "resnet18" in capsys.readouterr().out
  from resnet_jax.training import checkpoints
  variables, spec = checkpoints.load_variables(str(tmp_path / "out"))
  assert (spec.arch, spec.num_classes) == ("resnet18", 10)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, variables),
                              convert.from_torchvision(hf), strict=True)
  with open(tmp_path / "hf" / "config.json") as f:
    assert json.load(f)["model_type"] == "resnet"


def test_a_transformers_directory_brings_its_preprocessing(torch, transformers, tmp_path):
  """microsoft/resnet-*'s processor (ConvNeXt's: crop_pct 0.875, bicubic) becomes the spec: resize
  256, bicubic, crop 224. transformers 5 resizes with torchvision's tensor kernel, which rounds
  differently from PIL by at most one uint8 level (resnet_jax/data/transforms.py), so that is the margin."""
  from PIL import Image
  from skimage import data
  from resnet_jax.weights import hub
  hf = _randomised(transformers.ResNetForImageClassification(_config(transformers, "resnet18")),
                   torch, seed=5)
  hf.save_pretrained(tmp_path / "hf")
  processor = transformers.ConvNextImageProcessor(
      crop_pct=0.875, size={"shortest_edge": 224}, resample=3,
      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
  processor.save_pretrained(tmp_path / "hf")
  model, variables, transform = hub.pretrained(None, str(tmp_path / "hf" / "model.safetensors"))
  spec = hub.load_weights(None, str(tmp_path / "hf" / "model.safetensors"))[1]
  assert (spec.image_size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
  assert spec.source["kind"] == "transformers"
  photo = data.chelsea()
  theirs = processor(Image.fromarray(photo), return_tensors="np")["pixel_values"][0]
  ours = transform(photo)[0]
  np.testing.assert_allclose(ours, theirs.transpose(1, 2, 0), rtol=0, atol=1.0 / 255 / 0.224 + 1e-6)
  # Without the processor file, torchvision's default view is kept.
  os.remove(tmp_path / "hf" / "preprocessor_config.json")
  spec = hub.load_weights(None, str(tmp_path / "hf" / "model.safetensors"))[1]
  assert (spec.resize_size, spec.interpolation) == (256, "bilinear")
