"""Tests of resnet_jax.models: the registry, counts against torchvision and the paper, block parity."""

import copy
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax.weights import convert, convert_timm
from resnet_jax.models import timm_models
from resnet_jax.models.complexity import complexity

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                     "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
# He et al. 2015, table 6 (option A shortcuts), in millions, to the table's rounding.
PAPER_CIFAR_PARAMS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
                      "resnet110": 1.7, "resnet1202": 19.4}
# Depth is repetition of one block: the sweep runs these at a reduced depth that keeps their block
# and options (their exact depth is covered by the counts below and by the conversion parity tests),
# so the suite stays within minutes on two cores.
REDUCED_DEPTH = {"resnet101": (1, 1, 2, 1), "resnet152": (1, 1, 2, 1), "resnext101_32x8d": (1, 1, 2, 1),
                 "resnext101_64x4d": (1, 1, 2, 1), "wide_resnet101_2": (1, 1, 2, 1),
                 "resnet110": (2, 2, 2), "plain110": (2, 2, 2), "resnet1202": (2, 2, 2)}


def _param_count(model, size=32):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def _tv_weights(torchvision, arch):
  return torchvision.models.get_model_weights(arch).IMAGENET1K_V1


# --- registry -------------------------------------------------------------------------------------

def test_registry_names():
  expected = set(TORCHVISION_ARCHS) | set(PAPER_CIFAR_PARAMS) | {
      "resnet18_cifar", "plain18", "plain34", "plain20", "plain32", "plain44", "plain56", "plain110"}
  # timm's names (tests/test_timm_models.py) are the rest.
  assert set(models.list_models()) == expected | set(timm_models.timm_names())
  assert models.list_models() == sorted(models.list_models())


def test_registry_rejects_duplicates():
  with pytest.raises(ValueError, match="already registered"):
    models.register_model("resnet50", lambda **kw: None)


def test_unknown_model_lists_known_ones():
  with pytest.raises(ValueError, match=r"unknown model 'resnet51'.*resnet50"):
    models.get_model("resnet51")


def test_overrides_reach_the_module():
  model = models.get_model("resnet50", num_classes=10, dtype=jnp.bfloat16)
  assert (model.num_classes, model.dtype, model.groups) == (10, jnp.bfloat16, 1)


# --- counts against published figures -------------------------------------------------------------

@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_params_and_macs_match_torchvision_metadata(arch, torchvision):
  meta = _tv_weights(torchvision, arch).meta
  stats = complexity(models.get_model(arch), 224)
  assert stats.params == meta["num_params"]
  # torchvision's "GFLOPS" are multiply-adds rounded to three decimals.
  assert stats.gmacs == pytest.approx(meta["_ops"], rel=0.01)


@pytest.mark.parametrize("arch", sorted(PAPER_CIFAR_PARAMS))
def test_cifar_params_match_the_paper(arch):
  millions = _param_count(models.get_model(arch)) / 1e6
  digits = 1 if PAPER_CIFAR_PARAMS[arch] >= 1 else 2
  assert round(millions, digits) == PAPER_CIFAR_PARAMS[arch]


def test_plain_networks_differ_from_residual_only_by_projections():
  # Option A shortcuts have no parameters, so plain-n and resnet-n have the same count.
  for depth in (20, 32, 44, 56, 110):
    assert _param_count(models.get_model(f"plain{depth}")) == _param_count(
        models.get_model(f"resnet{depth}"))
  # ImageNet plain nets lack torchvision's projection shortcuts (option B).
  assert _param_count(models.get_model("plain18")) < _param_count(models.get_model("resnet18"))


def test_shortcut_option_c_adds_projections_everywhere():
  a, b, c = (_param_count(models.get_model("resnet20", shortcut=s)) for s in "ABC")
  assert a < b < c


# --- every registered model -----------------------------------------------------------------------

def _sweep_model(name):
  overrides = {"stage_sizes": REDUCED_DEPTH[name]} if name in REDUCED_DEPTH else {}
  return models.get_model(name, num_classes=7, **overrides)


# timm's ~100 names are options of the same modules: tests/test_timm_models.py trains one per option.
@pytest.mark.parametrize("name", [n for n in models.list_models() if n not in convert_timm.TIMM_ONLY])
def test_every_model_trains_and_evaluates(name):
  model = _sweep_model(name)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  labels = jnp.array([1, 5])
  # RBG keys: XLA:CPU compiles threefry normal sampling for many shapes much more slowly.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  params, stats = variables["params"], variables["batch_stats"]

  @jax.jit
  def run(params, stats, x):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                    mutable=["batch_stats"])
      loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
      return loss, (logits, updates["batch_stats"])
    (_, (train_logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    eval_logits, eval_updates = model.apply({"params": params, "batch_stats": stats}, x,
                                            train=False, mutable=["batch_stats"])
    return train_logits, new_stats, grads, eval_logits, eval_updates["batch_stats"]

  train_logits, new_stats, grads, eval_logits, eval_stats = run(params, stats, x)
  for logits in (train_logits, eval_logits):
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert np.isfinite(logits).all()
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats, new_stats)
  assert all(jax.tree.leaves(changed)), "train mode must update every running statistic"
  jax.tree.map(np.testing.assert_array_equal, stats, eval_stats)
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  for path, g in flat.items():
    assert np.isfinite(g).all(), f"non-finite gradient for {path}"
    assert np.any(g != 0), f"zero gradient for {path}"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet20"])
def test_zero_init_residual_zeroes_last_norm_of_each_block(arch):
  model = models.get_model(arch, zero_init_residual=True)
  size = 32
  params = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
  last = "bn2" if model.block is models.BasicBlock else "bn3"
  blocks = [k for k in params if k.startswith("layer")]
  assert len(blocks) == sum(model.stage_sizes)
  for name in blocks:
    for norm, p in params[name].items():
      if norm.startswith("bn"):
        expected = 0.0 if norm == last else 1.0
        np.testing.assert_array_equal(p["scale"], expected, err_msg=f"{name}/{norm}")
  np.testing.assert_array_equal(params["bn1"]["scale"], 1.0)


# --- options --------------------------------------------------------------------------------------

def test_features_and_headless_model():
  model = models.get_model("resnet18")
  x = jnp.zeros((2, 64, 64, 3))
  variables = model.init(jax.random.key(0), x)
  feats = model.apply(variables, x, return_features=True)
  shapes = {k: v.shape for k, v in feats.items()}
  assert shapes == {"stem": (2, 16, 16, 64), "layer1": (2, 16, 16, 64), "layer2": (2, 8, 8, 128),
                    "layer3": (2, 4, 4, 256), "layer4": (2, 2, 2, 512), "pre_logits": (2, 512),
                    "logits": (2, 1000)}
  for num_classes in (0, None):
    headless = models.get_model("resnet18", num_classes=num_classes)
    v = headless.init(jax.random.key(0), x)
    assert "fc" not in v["params"]
    np.testing.assert_allclose(headless.apply(v, x), feats["pre_logits"], rtol=1e-6)


def test_dilation_keeps_resolution():
  model = models.get_model("resnet50", replace_stride_with_dilation=(False, True, True))
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  feats = jax.eval_shape(lambda v: model.apply(v, x, return_features=True), variables)
  assert feats["layer4"].shape == (1, 8, 8, 2048)
  # Dilation changes no parameter shape.
  assert _param_count(model, 64) == 25_557_032


def test_group_norm_has_no_running_statistics():
  model = models.get_model("resnet18", norm="group", num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  assert "batch_stats" not in variables
  assert np.isfinite(model.apply(variables, x, train=True)).all()


def test_bfloat16_compute_keeps_float32_parameters():
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  f32 = models.get_model("resnet20")
  bf16 = models.get_model("resnet20", dtype=jnp.bfloat16)
  variables = f32.init(jax.random.key(1), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(
      bf16.init(jax.random.key(1), x)))
  feats = bf16.apply(variables, x, return_features=True)
  assert feats["layer3"].dtype == jnp.bfloat16 and feats["logits"].dtype == jnp.float32
  np.testing.assert_allclose(feats["logits"], f32.apply(variables, x), atol=0.1, rtol=0.1)


def test_pmap_axis_name_gives_global_batch_statistics():
  devices = jax.local_devices()[:4]
  assert len(devices) == 4, "conftest emulates 8 CPU devices"
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3)) * 3 + 1
  base = dict(stage_sizes=(1, 1, 1), num_classes=5)
  single = models.get_model("resnet20", **base)
  synced = models.get_model("resnet20", axis_name="batch", **base)
  variables = single.init(jax.random.key(1), x)
  want, want_upd = single.apply(variables, x, train=True, mutable=["batch_stats"])

  apply = functools.partial(synced.apply, train=True, mutable=["batch_stats"])
  replicated = jax.tree.map(lambda a: jnp.stack([a] * len(devices)), variables)
  got, got_upd = jax.pmap(apply, axis_name="batch", devices=devices)(
      replicated, x.reshape(4, 2, *x.shape[1:]))
  np.testing.assert_allclose(got.reshape(8, 5), want, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g[0], w, rtol=1e-5, atol=1e-6),
               got_upd, want_upd)


def test_flax_imagenet_example_train_step_trains_batchnorm():
  """A step written as Flax's examples/imagenet/train.py writes it: `apply` with
  mutable=['batch_stats'] and no `train` argument, under pmap with BatchNorm synced over 'batch'
  (as Flax's own ResNet). It must normalise with the batch's statistics and update every running
  one, i.e. equal an explicit train=True step of the same model on the whole batch."""
  from flax.training import train_state
  import optax

  class TrainState(train_state.TrainState):  # the example's own
    batch_stats: dict

  devices = jax.local_devices()[:2]
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3)) * 2 + 1
  labels = jnp.arange(8) % 5
  base = dict(stage_sizes=(1, 1, 1), num_classes=5)
  model = models.get_model("resnet20", axis_name="batch", **base)
  variables = models.get_model("resnet20", **base).init(jax.random.key(1), x)

  def train_step(state, batch):
    def loss_fn(params):
      logits, new_model_state = state.apply_fn(
          {"params": params, "batch_stats": state.batch_stats}, batch["image"],
          mutable=["batch_stats"])
      one_hot = jax.nn.one_hot(batch["label"], 5)
      return optax.softmax_cross_entropy(logits, one_hot).mean(), (new_model_state, logits)
    (_, (new_model_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis_name="batch")
    return state.apply_gradients(grads=grads, batch_stats=new_model_state["batch_stats"]), logits

  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables["batch_stats"], tx=optax.sgd(0.1))
  replicated = jax.tree.map(lambda a: jnp.stack([a] * len(devices)), state)
  batch = {"image": x.reshape(2, 4, *x.shape[1:]), "label": labels.reshape(2, 4)}
  new_state, logits = jax.pmap(train_step, axis_name="batch", devices=devices)(replicated, batch)

  # Reference: the same model without the pmap axis, train mode stated, on the global batch.
  want, want_updates = models.get_model("resnet20", **base).apply(
      variables, x, train=True, mutable=["batch_stats"])
  # Same float32 computation split over two devices: rounding-level differences only.
  np.testing.assert_allclose(logits.reshape(8, 5), want, rtol=1e-5, atol=1e-5)
  stats = jax.tree.map(lambda a: a[0], new_state.batch_stats)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
               stats, want_updates["batch_stats"])
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["batch_stats"], stats)
  assert all(jax.tree.leaves(changed)), "every running statistic must be updated"


def test_train_mode_is_inferred_from_mutable_batch_stats():
  model = models.get_model("resnet20", stage_sizes=(1, 1, 1), num_classes=5)
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3)) * 2 + 1
  variables = model.init(jax.random.key(1), x)
  for train in (True, False):
    explicit = model.apply(variables, x, train=train, mutable=["batch_stats"])[0]
    inferred = (model.apply(variables, x, mutable=["batch_stats"])[0] if train
                else model.apply(variables, x))
    np.testing.assert_array_equal(inferred, explicit)
  # The two modes differ on these inputs, so the equalities above tell them apart.
  assert not np.allclose(model.apply(variables, x, train=True, mutable=["batch_stats"])[0],
                         model.apply(variables, x, train=False))


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, match", [
    ((32, 32, 3), "rank 4"),
    ((1, 3, 32, 32), "expected 3 channels"),
    ((1, 32, 32, 1), "expected 3 channels"),
], ids=["rank3", "nchw", "grayscale"])
def test_bad_images_are_rejected(shape, match):
  model = models.get_model("resnet20")
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize("name, overrides, match", [
    ("resnet18", dict(groups=32, width_per_group=4), "BasicBlock only supports groups=1"),
    ("resnet34", dict(replace_stride_with_dilation=(False, False, True)), "dilation"),
    ("resnet50", dict(replace_stride_with_dilation=(False, True)), "one entry per stage"),
    ("resnet20", dict(shortcut="D"), "shortcut must be one of"),
    ("resnet20", dict(norm="layer"), "norm must be one of"),
    ("resnet20", dict(stem="vit"), "stem must be"),
], ids=["groups-basic", "dilation-basic", "dilation-length", "shortcut", "norm", "stem"])
def test_inconsistent_options_are_rejected(name, overrides, match):
  model = models.get_model(name, **overrides)
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


# --- parity with PyTorch on the same weights ------------------------------------------------------

def _randomize_torch(module, torch, seed=0):
  """Random weights and running statistics, so that eval-mode parity exercises all of them.

  Everything is drawn from `seed`: the convolutions and the classifier get torch's own default
  initialisation again, from the seeded generator, so the weights do not depend on which tests ran
  before (the global torch RNG).
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        torch.nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5, generator=g)  # torch's reset_parameters
        if m.bias is not None:
          bound = 1 / m.weight[0].numel() ** 0.5
          torch.nn.init.uniform_(m.bias, -bound, bound, generator=g)
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
  return module


def _torch_to_flax(module, like):
  """A torch module's state_dict as the Flax variables of paths `like`, through convert's key map."""
  state = module.state_dict()
  flat = {path: convert.to_flax_layout(state[convert.torch_key(path)].detach().numpy().copy())
          for path in flax.traverse_util.flatten_dict(like)}  # a copy: torch updates in place
  return flax.traverse_util.unflatten_dict(flat)


def _bn_partial(train):
  return functools.partial(models.BatchNorm, use_running_average=not train)


def _conv_partial():
  return functools.partial(flax.linen.Conv, use_bias=False)


# Block outputs are compared with torch's float64 forward, not its float32 one: both float32 results
# carry rounding noise, and in train mode (BatchNorm over 32-162 values per channel) ours was measured
# at 1.2e-6..3.7e-6 from float64 on an idle machine and up to 1.3e-5 under load (XLA:CPU's threaded
# reductions change order), torch float32 at 0.9e-6..1.1e-6, for outputs of magnitude 2.4..6.7.
# The bound, 1e-4 of the output's magnitude (2.4e-4..6.7e-4), is 18x the worst noise seen; a wrong
# formula (e.g. normalising by the unbiased variance: 1.6% on 32 values) is off by ~1e-2 of it.
BLOCK_RELATIVE_TOLERANCE = 1e-4


def _check_block_parity(torch, torch_block, flax_block, x_nhwc):
  _randomize_torch(torch_block, torch)
  like = jax.eval_shape(flax_block(norm=_bn_partial(False)).init, jax.random.key(0), x_nhwc)
  variables = _torch_to_flax(torch_block, like)
  reference = copy.deepcopy(torch_block).double()
  x_torch = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())
  for train in (False, True):
    torch_block.train(train)
    reference.train(train)
    with torch.no_grad():
      torch_block(x_torch)  # float32: updates the running statistics compared below
      want = reference(x_torch.double()).numpy().transpose(0, 2, 3, 1)
    block = flax_block(norm=_bn_partial(train))
    got, updates = block.apply(variables, jnp.asarray(x_nhwc), mutable=["batch_stats"])
    bound = BLOCK_RELATIVE_TOLERANCE * np.abs(want).max()
    assert np.abs(np.asarray(got, np.float64) - want).max() <= bound, f"train={train}"
    if train:  # running statistics updated as torch does, unbiased variance included
      jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
                   updates["batch_stats"], _torch_to_flax(torch_block, like)["batch_stats"])


@pytest.mark.parametrize("stride, size", [(1, 8), (2, 8), (2, 9)], ids=["s1", "s2-even", "s2-odd"])
def test_basic_block_matches_torch(stride, size, torch, torchvision):
  tv = torchvision.models.resnet
  inplanes, planes = 8, 8 if stride == 1 else 16
  downsample = None
  if stride != 1:
    downsample = torch.nn.Sequential(tv.conv1x1(inplanes, planes, stride), torch.nn.BatchNorm2d(planes))
  torch_block = tv.BasicBlock(inplanes, planes, stride, downsample)
  flax_block = functools.partial(models.BasicBlock, planes=planes, conv=_conv_partial(),
                                 strides=stride,
                                 shortcut="projection" if downsample else "identity")
  x = np.random.default_rng(0).normal(size=(2, size, size, inplanes)).astype(np.float32)
  _check_block_parity(torch, torch_block, flax_block, x)


@pytest.mark.parametrize("stride, groups, dilation, size", [
    (2, 1, 1, 8), (2, 4, 1, 9), (1, 4, 2, 8), (1, 2, 3, 7)],
    ids=["s2", "s2-groups-odd", "groups-dilation2", "groups-dilation3-odd"])
def test_bottleneck_matches_torch(stride, groups, dilation, size, torch, torchvision):
  tv = torchvision.models.resnet
  inplanes, planes, base_width = 16, 8, 8
  downsample = torch.nn.Sequential(tv.conv1x1(inplanes, planes * 4, stride),
                                   torch.nn.BatchNorm2d(planes * 4))
  torch_block = tv.Bottleneck(inplanes, planes, stride, downsample, groups, base_width, dilation)
  flax_block = functools.partial(models.Bottleneck, planes=planes, conv=_conv_partial(),
                                 strides=stride, groups=groups, base_width=base_width,
                                 dilation=dilation, shortcut="projection")
  x = np.random.default_rng(1).normal(size=(2, size, size, inplanes)).astype(np.float32)
  _check_block_parity(torch, torch_block, flax_block, x)


@pytest.mark.parametrize("size", [32, 33, 64, 67], ids=lambda s: f"{s}px")
def test_stem_matches_torch(size, torch, torchvision):
  tv_model = _randomize_torch(torchvision.models.resnet18(), torch).eval()
  stem = torch.nn.Sequential(tv_model.conv1, tv_model.bn1, tv_model.relu, tv_model.maxpool)
  model = models.get_model("resnet18", stage_sizes=(1, 1, 1, 1))
  x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype(np.float32)
  variables = jax.tree.map(np.asarray, model.init(jax.random.key(0), x))
  stem_variables = {c: {k: v for k, v in variables[c].items() if k in ("conv1", "bn1")}
                    for c in variables}
  theirs = _torch_to_flax(torch.nn.ModuleDict({"conv1": tv_model.conv1, "bn1": tv_model.bn1}),
                          stem_variables)
  variables["params"].update(theirs["params"])
  variables["batch_stats"].update(theirs["batch_stats"])
  with torch.no_grad():
    want = stem(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  got = model.apply(variables, x, return_features=True)["stem"]
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batch_norm_variance_is_exact_when_the_mean_dominates():
  """Activations 1000 standard deviations from zero, as deep after a ReLU: E[x^2] - E[x]^2 in float32
  keeps ~log2(1e6) fewer bits of the variance (~1e-2 relative error), while moments about the
  running mean (here 0.5 std from the batch mean, as after a few steps) lose almost none. The float64
  reference is numpy's two-pass variance of the same float32 inputs; 1e-4 leaves 100x over the
  ~1e-6 float32 rounding of the shifted moments and of the momentum update."""
  rng = np.random.default_rng(0)
  x = (1000.0 + rng.standard_normal((4, 4, 4, 8))).astype(np.float32)
  variables = {"params": {"scale": np.ones(8, np.float32), "bias": np.zeros(8, np.float32)},
               "batch_stats": {"mean": np.full(8, 1000.5, np.float32), "var": np.ones(8, np.float32)}}
  y, updates = models.BatchNorm().apply(variables, x, mutable=["batch_stats"])
  unbiased = (np.asarray(updates["batch_stats"]["var"], np.float64) - 0.9) / 0.1
  want = np.var(x.astype(np.float64), axis=(0, 1, 2), ddof=1)
  np.testing.assert_allclose(unbiased, want, rtol=1e-4)
  want_mean = np.mean(x.astype(np.float64), axis=(0, 1, 2))
  # The updated running mean is float32 near 1000 (ulp 6e-5), so it recovers the batch mean to ~1e-6.
  np.testing.assert_allclose((np.asarray(updates["batch_stats"]["mean"], np.float64) - 900.45) / 0.1,
                             want_mean, rtol=1e-5)
