"""timm's ResNet family: the registry sweep against timm, per-part conversion parity, round trips."""

import copy
import functools

import chex
import jax
import numpy as np
import pytest

import resnet_jax
from resnet_jax.weights import convert, convert_timm, verify
from resnet_jax.weights.convert import ConversionError
from resnet_jax.models.resnet import get_model
from resnet_jax.models.timm_models import LEFT_OUT, SAME_AS_TORCHVISION, TIMM_RESNETS, timm_names

from test_convert import _assert_close, _check_train_mode, _images


@pytest.fixture(scope="module")
def timm(torchvision):
  return pytest.importorskip("timm")


@functools.lru_cache(maxsize=None)
def _timm_meta(name):
  """(parameter count, {key: shape} of the state_dict) of timm's `name`, built on the meta device
  (shapes only, no memory, no initialisation)."""
  import timm
  import torch
  with torch.device("meta"):
    model = timm.create_model(name)
  return (sum(p.numel() for p in model.parameters()),
          {k: tuple(v.shape) for k, v in model.state_dict().items()
           if not k.endswith("num_batches_tracked")})


# --- the registry ---------------------------------------------------------------------------------

def test_every_timm_resnet_name_is_registered_or_left_out(timm):
  expected = set(timm.list_models(module="resnet")) | set(timm.list_models(module="resnetv2"))
  assert set(timm_names()) | set(LEFT_OUT) == expected
  assert not set(timm_names()) & set(LEFT_OUT)
  assert set(timm_names()) <= set(resnet_jax.list_models())


@pytest.mark.parametrize("name", SAME_AS_TORCHVISION)
def test_shared_names_are_torchvisions_own_entries(name, timm):
  # timm's resnet50 is torchvision's key for key: one definition serves both names, and timm's
  # files convert through torchvision's key map and inference.
  assert name not in TIMM_RESNETS and name in convert.TORCHVISION_ARCHS
  keys = _timm_meta(name)[1]
  assert {k: s for k, (_, s) in convert.torchvision_layout(name, 1000).items()} == keys
  shaped = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}  # shapes, no memory
  assert convert.infer_arch(shaped) == convert.Inferred(name, 1000)


@pytest.mark.parametrize("name", timm_names())
def test_params_equal_timm_and_the_name_is_inferred(name, timm):
  count, keys = _timm_meta(name)
  model = get_model(name)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == count
  # Names whose state_dicts are indistinguishable (anti-aliasing has no weights) must be refused
  # together; every other name inferred.
  same = sorted(n for n in timm_names() if _timm_meta(n)[1] == keys)
  state = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}  # shapes, no memory
  # The general inference every command uses on a file takes torchvision's name first: a file
  # with its keys is torchvision's (resnet50's, or an anti-aliased twin's, which no key tells apart).
  shared = [n for n in same if n in convert.TORCHVISION_ARCHS]
  general = convert.Inferred(shared[0] if shared else name, 1000)
  if same == [name]:
    assert convert_timm.infer_timm_arch(state) == convert.infer_arch(state) == general
  else:
    with pytest.raises(ConversionError) as e:
      convert_timm.infer_timm_arch(state)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in same)
    if shared:
      assert convert.infer_arch(state) == general
    else:
      with pytest.raises(ConversionError, match="alike"):
        convert.infer_arch(state)


# --- parity with timm, one model per part --------------------------------------------------------

def _timm_model(name, seed, **kwargs):
  """timm's `name` with random weights, every norm's affine parameters and BatchNorm's running
  statistics randomised (timm zeroes each block's last norm, which would hide its branch)."""
  import timm
  import torch
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    if name.endswith("_bit") and "layers" in kwargs:
      # timm's BiT entry points fix the depth; this is what they build (_create_resnetv2_bit).
      model = timm.models.resnetv2.ResNetV2(
          stem_type="fixed", conv_layer=functools.partial(timm.layers.StdConv2d, eps=1e-8),
          width_factor=int(name.split("x")[1][0]), **kwargs)
    else:
      model = timm.create_model(name, **kwargs)
    with torch.no_grad():
      for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
          m.weight.uniform_(0.5, 1.5)
          m.bias.normal_(0.0, 0.2)
        if isinstance(m, torch.nn.BatchNorm2d):
          m.running_mean.normal_(0.0, 0.2)
          m.running_var.uniform_(0.5, 2.0)
  return model.eval()


# name, part, timm's overrides (a shallower model where the part does not need the depth).
ONE = dict(layers=(1, 1, 1, 1))
PARTS = [
    ("resnet10t", "stem t, avg-pool shortcut", {}),
    ("resnet18d", "stem d", {}),
    ("resnet50c", "stem c", ONE),
    ("resnet50s", "stem s", ONE),
    ("seresnext26d_32x4d", "SE, ResNeXt", ONE),
    ("ecaresnet26t", "ECA", ONE),
    ("resnetblur18", "blur anti-aliasing", {}),
    ("resnetaa34d", "avg-pool anti-aliasing", ONE),
    ("resnet50_gn", "GroupNorm", ONE),
    ("resnetrs50", "ResNet-RS", ONE),
    ("senet154", "SENet: 3x3 shortcut, halved first conv", ONE),
    ("resnetv2_50", "ResNetV2 pre-activation, BatchNorm", ONE),
    ("resnetv2_18d", "ResNetV2 basic blocks, deep stem, avg-pool shortcut", {}),
    ("resnetv2_50t", "ResNetV2 tiered stem", ONE),
    ("resnetv2_50x1_bit", "BiT: weight-standardised convs, GroupNorm", ONE),
]


@pytest.mark.parametrize("name, part, overrides", PARTS, ids=[p[0] for p in PARTS])
def test_parity_with_timm(name, part, overrides, torch):
  timm_model = _timm_model(name, seed=len(name), **overrides)
  model = get_model(name, **({"stage_sizes": overrides["layers"]} if overrides else {}))
  state = {k: v.clone() for k, v in timm_model.state_dict().items()}
  variables = convert_timm.from_timm(timm_model, name, model=model)
  # Round trip, exact both ways.
  back = convert_timm.to_timm(variables, name, model=model)
  for key, value in state.items():
    if not key.endswith("num_batches_tracked"):
      assert torch.equal(back[key], value), key
  chex.assert_trees_all_equal(convert_timm.from_timm(back, name, model=model), variables,
                              strict=True)
  # timm loads what we write, strictly.
  reference = copy.deepcopy(timm_model)
  reference.load_state_dict(back, strict=True)

  x = _images()
  def forward(variables, x):
    features = model.apply(variables, x, train=False, return_features=True)
    train_logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return features, train_logits, updates.get("batch_stats")
  features, train_logits, batch_stats = jax.tree.map(np.asarray, forward(variables, x))
  _assert_close(features["logits"], verify.run_torchvision(timm_model, x))
  with torch.no_grad():
    _, stages = timm_model.forward_intermediates(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  for i, stage in enumerate(stages[1:], 1):
    _assert_close(features[f"layer{i}"].transpose(0, 3, 1, 2).reshape(2, -1),
                  stage.numpy().reshape(2, -1), what=f"layer{i}")
  updated = {"params": variables["params"], **({"batch_stats": batch_stats} if batch_stats else {})}
  to_state = lambda v: convert_timm.to_timm(v, name, as_numpy=True, model=model)  # noqa: E731
  _check_train_mode(timm_model, reference.double(), x, train_logits, updated, to_state)


# Every layer of the parts above, combined to keep the count of (slow, unjitted) gradients small.
TRAIN = {"resnet10t": dict(attn="se", aa="blur"), "resnet50_gn": dict(attn="eca", aa="avg"),
         "resnetrs50": {}, "senet154": {}, "resnetv2_18d": {}, "resnetv2_50x1_bit": {}}


@pytest.mark.parametrize("name", TRAIN)
def test_one_train_step_gives_finite_gradients(name):
  """A train step (one block per stage, drop path and dropout on): every parameter gets a finite
  gradient, and every running statistic moves."""
  model = get_model(name, num_classes=5, stage_sizes=(1, 1, 1, 1), drop_path_rate=0.1, drop_rate=0.1,
                    **TRAIN[name])
  x = _images(size=32)
  variables = model.init(jax.random.key(0), x)

  def loss(params):
    logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                  mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
    return (logits ** 2).mean(), updates

  grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  if "batch_stats" in variables:
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), updates["batch_stats"],
                         variables["batch_stats"])
    assert all(jax.tree.leaves(moved))


def test_drop_path_and_dropout_follow_timms_rules():
  model = get_model("resnet18d", drop_path_rate=0.2, drop_rate=0.5, num_classes=4)
  x = _images(size=32)
  variables = model.init(jax.random.key(0), x)
  # Eval ignores both; train mode needs the 'dropout' rng and changes the output.
  eval_logits = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(eval_logits, model.apply(variables, x, train=False))
  logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                          rngs={"dropout": jax.random.key(1)})
  plain = get_model("resnet18d", num_classes=4)
  still, _ = plain.apply(variables, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(logits, still)
  with pytest.raises(Exception, match="dropout"):
    model.apply(variables, x, train=True, mutable=["batch_stats"])


def test_drop_path_rates_rise_linearly_over_blocks():
  # timm: block i of n drops with rate drop_path_rate * i / (n - 1).
  model = get_model("resnet10t", drop_path_rate=0.3)
  rates = []

  def record(next_fun, args, kwargs, context):
    if type(context.module).__name__ == "DropPath" and context.method_name == "__call__":
      rates.append(context.module.rate)
    return next_fun(*args, **kwargs)

  import flax.linen as nn
  x = _images(size=32)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  np.testing.assert_allclose(rates, [0.1, 0.2, 0.3])  # block 0 has rate 0: no DropPath at all


# --- conversion errors and entry points -----------------------------------------------------------

def test_timm_names_convert_through_from_torchvision(torch):
  timm_model = _timm_model("resnet10t", seed=3)
  variables = convert.from_torchvision(timm_model, "resnet10t")
  chex.assert_trees_all_equal(variables, convert_timm.from_timm(timm_model), strict=True)
  back = convert.to_torchvision(variables, "resnet10t", as_numpy=True)
  assert "conv1.0.weight" in back and "layer2.0.downsample.1.weight" in back


def test_misfitting_weights_list_keys_and_suggest_the_name(torch):
  state = _timm_model("resnet10t", seed=4).state_dict()
  with pytest.raises(ConversionError) as e:
    convert_timm.from_timm(state, "resnet14t")
  assert "missing keys" in str(e.value) and "pass arch='resnet10t'" in str(e.value)
  with pytest.raises(ConversionError, match="not a timm ResNet state_dict"):
    convert_timm.infer_timm_arch({"stem.conv.weight": np.zeros((8, 3, 3, 3))})


def test_convert_command_takes_a_timm_name(torch, tmp_path, capsys):
  from resnet_jax import cli
  from resnet_jax.training import checkpoints
  timm_model = _timm_model("resnet10t", seed=5)
  path = tmp_path / "r10t.pth"
  torch.save(timm_model.state_dict(), path)
  assert cli.main(["convert", "--arch", "resnet10t", "--weights", str(path),
                   "--out", str(tmp_path / "out")]) == 0
  variables, spec = checkpoints.load_variables(str(tmp_path / "out"))
  assert spec.arch == "resnet10t"
  chex.assert_trees_all_equal(variables, convert_timm.from_timm(timm_model), strict=True)


def test_readme_counts_every_registered_name_and_the_left_out_ones():
  import os
  readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "README.md")).read()
  assert f"`resnet_jax.list_models()` holds {len(resnet_jax.list_models())} names" in readme
  for name in list(LEFT_OUT) + [n for n in timm_names() if n not in SAME_AS_TORCHVISION]:
    assert f"`{name}`" in readme, name


@pytest.mark.parametrize("name", ["resnet10t", "resnetv2_18d"])
def test_a_new_head_fits_the_model(name):
  model = get_model(name, num_classes=3)
  x = _images(size=32)
  variables = jax.tree.map(np.asarray, get_model(name, num_classes=0).init(jax.random.key(0), x))
  new = convert.replace_head(variables, name, 3)
  assert convert.variables_classes(new) == 3
  assert model.apply(new, x).shape == (2, 3)
  assert convert.variables_classes(convert.replace_head(new, name, 0)) is None


@pytest.mark.parametrize("name", ["resnet10t", "resnetaa34d", "resnetblur18", "resnetv2_18d",
                                  "resnetv2_50x1_bit"])
def test_odd_sizes_pool_as_timm(name, torch):
  """At 45 px every stage has odd sizes: average-pool shortcuts keep the partial window (ceil mode,
  averaged over the pixels it holds), anti-aliasing's 2x2 pool drops it, blur pads by reflection,
  the stem pools pad as timm's."""
  overrides = ONE if name in ("resnetaa34d", "resnetv2_50x1_bit") else {}
  timm_model = _timm_model(name, seed=9, **overrides)
  model = get_model(name, **({"stage_sizes": (1, 1, 1, 1)} if overrides else {}))
  x = _images(seed=3, size=45)
  variables = convert_timm.from_timm(timm_model, name, model=model)
  if name == "resnetaa34d":
    # timm's 2x2 anti-aliasing pool floors odd sizes where the shortcut's ceils them: in timm
    # as here, the two branches then differ in size and cannot be added.
    with pytest.raises(RuntimeError, match="must match the size"):
      verify.run_torchvision(timm_model, x)
    with pytest.raises(TypeError, match="incompatible shapes"):
      model.apply(variables, x)
    return
  _assert_close(model.apply(variables, x), verify.run_torchvision(timm_model, x))


@pytest.mark.parametrize("name", ["resnet10t", "resnetv2_18d"])
def test_headless_weights_convert_to_a_headless_model(name, torch):
  timm_model = _timm_model(name, seed=11, num_classes=0)
  assert convert_timm.infer_timm_arch(timm_model.state_dict()) == convert.Inferred(name, None)
  variables = convert_timm.from_timm(timm_model)
  assert convert.variables_classes(variables) is None
  x = _images(seed=4, size=32)
  _assert_close(get_model(name, num_classes=0).apply(variables, x), verify.run_torchvision(timm_model, x))
  assert set(convert_timm.to_timm(variables, name, as_numpy=True)) == set(timm_model.state_dict())


@pytest.mark.parametrize("name", ["resnet18d", "resnetv2_18"])
def test_a_timm_file_goes_through_every_command(name, torch, tiny_config, tmp_path, capsys):
  """timm's own state_dict file (no --arch: the name is inferred, here a deep stem and average-pool
  shortcuts, or ResNetV2's pre-activation and 1x1-conv head) through convert, verify (against
  timm's model, for the file and the directory), predict, export and back, and init_from with
  another class count (the head is replaced, the rest kept)."""
  from PIL import Image
  from resnet_jax import cli
  from resnet_jax.training import checkpoints, train_lib
  pth, converted, exported = (str(tmp_path / n) for n in ("timm.pth", "converted", "again.pth"))
  torch.save(_timm_model(name, seed=5, num_classes=7).state_dict(), pth)

  def run(*argv) -> str:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return out

  assert f"wrote {name} (num_classes=7" in run("convert", "--weights", pth, "--out", converted)
  variables = checkpoints.load_variables(converted)[0]
  chex.assert_trees_all_equal(variables, convert_timm.from_timm(torch.load(pth), name))
  for weights in (pth, converted):
    out = run("verify", "--weights", weights, "--size", "32", "--batch", "2", "--no-photos")
    assert f"vs timm float32" in out and out.strip().splitlines()[-1].startswith("PASS"), out
  image = str(tmp_path / "image.png")
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 26, 3), np.uint8)).save(image)
  assert len(run("predict", "--weights", converted, "--top", "2", image).splitlines()) == 3
  run("export", "--checkpoint", converted, "--out", exported)
  assert set(torch.load(exported)) == set(torch.load(pth))
  run("convert", "--weights", exported, "--out", str(tmp_path / "back"))
  chex.assert_trees_all_equal(checkpoints.load_variables(str(tmp_path / "back"))[0], variables)
  # One step at learning rate 0 from the directory, on 5 classes: every weight but the head read.
  import ml_collections
  config = tiny_config(init_from=converted, num_train_steps=1, checkpoint_every_steps=1,
                       base_learning_rate=0.0, weight_decay=0.0, model=name,
                       model_overrides=ml_collections.ConfigDict({}), source="synthetic",
                       synthetic_examples=16, num_classes=5, image_size=16, batch_size=8,
                       mean=(124.0, 116.0, 104.0), std=(58.0, 57.0, 57.0))
  train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  started = checkpoints.load_variables(str(tmp_path / "run"))[0]["params"]
  head = "head_fc" if name.startswith("resnetv2") else "fc"
  assert convert.variables_classes({"params": started}) == 5
  chex.assert_trees_all_equal({k: v for k, v in started.items() if k != head},
                              {k: v for k, v in variables["params"].items() if k != head})
