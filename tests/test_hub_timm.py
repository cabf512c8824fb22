"""timm's weights by name from a local Hugging Face cache the tests build (no network): spec and logits."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

import resnet_jax
from resnet_jax import cli
from resnet_jax.weights import convert, hub, hub_timm, verify
from resnet_jax.data import transforms

COMMITS = ("1" * 40, "2" * 40)  # the Hub names snapshots by their git commit


@pytest.fixture(scope="module")
def timm(torch):
  import timm as timm_module  # after torchvision (conftest's `torch` fixture imports it)
  return timm_module


def _timm_model(timm, torch, name, seed, num_classes=5):
  """timm's `name` (random weights, random BatchNorm statistics), eval mode."""
  with torch.random.fork_rng(devices=[]), torch.no_grad():
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
  return model.eval()


def publish(cache, model, name, commit=COMMITS[0], files=("model.safetensors",), main=True):
  """Writes `model` as the Hub's `timm/NAME` at `commit` into the cache layout huggingface_hub
  reads: models--timm--NAME/{blobs/<hash>, snapshots/<commit>/<file> -> blob, refs/main}. The files
  are timm's own `save_for_hf` output (weights and config.json with its pretrained_cfg)."""
  from timm.models import save_for_hf
  out = os.path.join(cache, "_out", name, commit)
  save_for_hf(model, out, safe_serialization=("both" if len(files) > 1 else
                                              files[0] == "model.safetensors"))
  repo = os.path.join(cache, f"models--timm--{name}")
  snapshot = os.path.join(repo, "snapshots", commit)
  os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
  os.makedirs(snapshot, exist_ok=True)
  for filename in (*files, "config.json"):
    with open(os.path.join(out, filename), "rb") as f:
      blob = hashlib.sha256(f.read()).hexdigest()
    shutil.copyfile(os.path.join(out, filename), os.path.join(repo, "blobs", blob))
    os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snapshot, filename))
  if main:
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
      f.write(commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  """An empty Hub cache, with huggingface_hub offline and reading it (as HF_HUB_CACHE and
  HF_HUB_OFFLINE=1 set before the import would)."""
  from huggingface_hub import constants
  cache = str(tmp_path / "hub")
  os.makedirs(cache)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  return cache


def _photo():
  from skimage import data
  return data.chelsea()  # 300 x 451 RGB: resized and cropped on both axes


def test_pretrained_by_timm_name_feeds_the_model_as_timm_does(torch, timm, offline_cache):
  """resnet18.a1_in1k: bicubic, crop_pct 0.95 (resize 235), ImageNet mean/std, from config.json."""
  model = _timm_model(timm, torch, "resnet18.a1_in1k", seed=0)
  publish(offline_cache, model, "resnet18.a1_in1k")
  ours = hub.pretrained("resnet18.a1_in1k")
  cfg = model.pretrained_cfg
  spec = resnet_jax.load_variables("resnet18.a1_in1k")[1]
  assert (spec.arch, spec.num_classes) == ("resnet18", 5)
  assert spec.interpolation == cfg["interpolation"] == "bicubic"
  assert spec.image_size == cfg["input_size"][-1] == 224
  assert spec.resize_size == int(224 / cfg["crop_pct"]) == 235
  np.testing.assert_allclose(spec.mean_std(1.0)[0], cfg["mean"], rtol=1e-12)
  np.testing.assert_allclose(spec.mean_std(1.0)[1], cfg["std"], rtol=1e-12)
  from resnet_jax.data.image_ops import IMAGENET_MEAN_255, IMAGENET_STD_255
  assert (spec.mean_255, spec.std_255) == (IMAGENET_MEAN_255, IMAGENET_STD_255)  # no init_from warning
  assert spec.source["kind"] == "timm" and spec.source["commit"] == COMMITS[0]

  # timm's own eval transform of a PIL photo, bit for bit.
  from PIL import Image
  config = timm.data.resolve_data_config({}, model=model)
  theirs = timm.data.create_transform(**config)(Image.fromarray(_photo())).numpy()
  x = ours.transform(_photo())
  np.testing.assert_array_equal(x[0], theirs.transpose(1, 2, 0))
  logits = jax.jit(ours.model.apply)(ours.variables, x)
  agreement = verify.compare_logits(logits, verify.run_torchvision(model, x))
  assert agreement.rel < 1e-5 and agreement.top1 == 1.0, agreement


def test_bilinear_weights_keep_bilinear(torch, timm, offline_cache):
  """A config that says bilinear with crop_pct 0.875 (timm's resnet50.tv_in1k) gets exactly that:
  the spec follows config.json, not a default."""
  model = _timm_model(timm, torch, "resnet50.tv_in1k", seed=1, num_classes=3)
  publish(offline_cache, model, "resnet50.tv_in1k")
  variables, spec = hub.load_weights(None, "timm/resnet50.tv_in1k")
  assert (spec.interpolation, spec.resize_size, spec.image_size) == ("bilinear", 256, 224)
  chex.assert_trees_all_equal(variables, convert.from_torchvision(model), strict=True)


def test_pinned_revision_and_pickle_fallback(torch, timm, offline_cache):
  old = _timm_model(timm, torch, "resnet18.a1_in1k", seed=2)
  new = _timm_model(timm, torch, "resnet18.a1_in1k", seed=3)
  # The old revision has only pytorch_model.bin: the fallback when there is no model.safetensors.
  publish(offline_cache, old, "resnet18.a1_in1k", COMMITS[0], files=("pytorch_model.bin",),
          main=False)
  publish(offline_cache, new, "resnet18.a1_in1k", COMMITS[1])
  latest, _ = hub.load_weights(None, "resnet18.a1_in1k")
  chex.assert_trees_all_equal(latest, convert.from_torchvision(new), strict=True)
  for variables, spec in (hub.load_weights(None, f"resnet18.a1_in1k@{COMMITS[0]}"),
                          hub.load_weights(None, "resnet18.a1_in1k", revision=COMMITS[0])):
    chex.assert_trees_all_equal(variables, convert.from_torchvision(old), strict=True)
    assert spec.source["commit"] == COMMITS[0]
    assert spec.source["file"].endswith("pytorch_model.bin")
  with pytest.raises(ValueError, match="pins revision"):
    hub.load_weights(None, f"resnet18.a1_in1k@{COMMITS[0]}", revision=COMMITS[1])


def test_names_are_told_from_paths_and_torchvision_names(tmp_path):
  for name in ("resnet50.a1_in1k", "timm/resnet50d.ra2_in1k", "hf-hub:timm/resnet50.a1_in1k",
               "resnet50.a1_in1k@main"):
    assert hub_timm.is_timm_name(name), name
  (tmp_path / "resnet50.a1_in1k").mkdir()
  for name in ("IMAGENET1K_V2", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth",
               "w/model.safetensors", "https://x/resnet50.a1_in1k", str(tmp_path / "resnet50.a1_in1k")):
    assert not hub_timm.is_timm_name(name), name


def test_not_cached_offline_is_one_line_and_writes_nothing(offline_cache, tmp_path, capsys):
  with pytest.raises(hub_timm.HubError, match="not in the Hugging Face cache"):
    hub.pretrained("resnet50.a1_in1k")
  code = cli.main(["convert", "--weights", "timm/resnet50.a1_in1k", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1 and "resnet50.a1_in1k" in err, err
  assert not os.path.exists(tmp_path / "o")


def test_unsupported_preprocessing_is_refused(torch, timm, offline_cache):
  model = _timm_model(timm, torch, "resnet18.a1_in1k", seed=4)
  model.pretrained_cfg = dict(model.pretrained_cfg, crop_mode="squash")
  publish(offline_cache, model, "resnet18.a1_in1k")
  with pytest.raises(ValueError, match="crop_mode 'squash'"):
    hub.load_weights(None, "resnet18.a1_in1k")


def test_cli_convert_predict_and_load_variables_take_timm_names(torch, timm, tmp_path):
  """The user's way: HF_HUB_CACHE and HF_HUB_OFFLINE=1 in the environment, one subprocess."""
  cache = str(tmp_path / "hub")
  model = _timm_model(timm, torch, "resnet18.a1_in1k", seed=5)
  publish(cache, model, "resnet18.a1_in1k")
  from PIL import Image
  Image.fromarray(_photo()).save(tmp_path / "cat.png")
  env = dict(os.environ, HF_HUB_CACHE=cache, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  script = (
      "import sys, json\n"
      "import resnet_jax\nfrom resnet_jax import cli\n"
      "assert cli.main(['convert', '--weights', 'timm/resnet18.a1_in1k', '--out', sys.argv[1]]) == 0\n"
      "assert cli.main(['predict', '--weights', 'resnet18.a1_in1k', sys.argv[2]]) == 0\n"
      "print(json.dumps(resnet_jax.load_variables('resnet18.a1_in1k')[1].to_json()))\n")
  run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out"), str(tmp_path / "cat.png")],
                       env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  from resnet_jax.training import checkpoints
  variables, spec = checkpoints.load_variables(str(tmp_path / "out"))
  assert (spec.arch, spec.interpolation, spec.resize_size) == ("resnet18", "bicubic", 235)
  assert json.loads(run.stdout.strip().splitlines()[-1])["interpolation"] == "bicubic"
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, variables), convert.from_torchvision(model),
                              strict=True)


def test_init_from_takes_a_timm_name(torch, timm, offline_cache):
  """--config.init_from=resnet18.a1_in1k: every weight but the classifier (another class count)."""
  from resnet_jax.training import steps, train_lib
  model = _timm_model(timm, torch, "resnet18.a1_in1k", seed=6)
  publish(offline_cache, model, "resnet18.a1_in1k")
  # This run's state: another model's weights (zeros) and a head of 3 classes; no init to compile.
  zeros = jax.tree.map(np.zeros_like, convert.from_torchvision(model))
  zeros["params"]["fc"] = {"kernel": np.ones((512, 3), np.float32), "bias": np.ones(3, np.float32)}
  state = steps.TrainState(step=0, params=zeros["params"], batch_stats=zeros["batch_stats"],
                           opt_state=())
  loaded = train_lib.load_pretrained(state, "resnet18.a1_in1k")
  expected = convert.from_torchvision(model)
  chex.assert_trees_all_equal(loaded.params["layer4_1"], expected["params"]["layer4_1"])
  chex.assert_trees_all_equal(loaded.batch_stats, expected["batch_stats"])
  chex.assert_trees_all_equal(loaded.params["fc"], state.params["fc"])  # a fresh head of 3 classes


def test_evaluate_feeds_timms_weights_their_preprocessing(torch, timm, offline_cache):
  """`evaluate` on timm's name scores what the model gives on timm's own eval transform (bicubic,
  resize 235): its views are made with the spec's filter and resize, not torchvision's defaults."""
  from PIL import Image
  from resnet_jax.training import evaluate
  from resnet_jax.data import input_pipeline
  model = _timm_model(timm, torch, "resnet18.a1_in1k", seed=7)
  publish(offline_cache, model, "resnet18.a1_in1k")
  photos = np.stack([_photo(), _photo()[:, ::-1]])
  source = input_pipeline.InMemorySource(photos, np.array([0, 1]), num_classes=5)
  result = evaluate.evaluate("resnet18.a1_in1k", source, average="logits", per_device_batch=1)
  transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
  x = np.stack([transform(Image.fromarray(p)).numpy().transpose(1, 2, 0) for p in photos])
  agreement = verify.compare_logits(result.scores, verify.run_torchvision(model, x))
  assert agreement.rel < 1e-5 and agreement.top1 == 1.0, agreement
