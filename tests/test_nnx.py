"""The zoo under Flax NNX (resnet_jax.models.nnx): the same function, train/eval modes, one optimizer step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import resnet_jax
from resnet_jax.models.nnx import linen_variables, to_nnx

# Float32 sums may be reordered between the two programs; 1e-5 relative is ~80 float32 ulps, while one
# wrong term (a missed statistics update, a wrong mode) moves values by far more than 1e-3.
RTOL, ATOL = 1e-5, 1e-6


def _max_rel(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y))) /
                         (np.max(np.abs(np.asarray(y))) + 1e-12)), a, b)))


@pytest.fixture(scope="module", params=["resnet20", "resnet18"])
def linen(request):
  model = resnet_jax.get_model(request.param, num_classes=5)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  # Non-trivial running statistics, so that eval mode is checked against them, not against 0/1.
  stats = jax.tree.map(lambda s: s + 0.1 * jax.random.uniform(jax.random.key(2), s.shape),
                       variables["batch_stats"])
  return model, {"params": variables["params"], "batch_stats": stats}, x


def test_eval_mode_is_the_linen_model(linen):
  model, variables, x = linen
  net = to_nnx(model, variables)
  net.eval()
  np.testing.assert_array_equal(net(x), model.apply(variables, x))
  # Eval mode leaves the statistics alone.
  jax.tree.map(np.testing.assert_array_equal, linen_variables(net), variables)


def test_train_mode_updates_the_running_statistics(linen):
  model, variables, x = linen
  net = to_nnx(model, variables)  # NNX modules start in train mode, as nnx.BatchNorm does
  assert not net.use_running_average
  out = net(x)
  want, updates = model.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_array_equal(out, want)
  jax.tree.map(np.testing.assert_array_equal, linen_variables(net)["batch_stats"],
               updates["batch_stats"])
  net.eval()
  assert net.use_running_average
  net.train()
  assert not net.use_running_average


def test_one_optimizer_step_equals_the_linen_step(linen):
  model, variables, x = linen
  labels = jnp.arange(x.shape[0]) % 5
  tx = optax.sgd(0.1, momentum=0.9)

  @jax.jit
  def linen_step(variables):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                    mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    step, _ = tx.update(grads, tx.init(variables["params"]), variables["params"])
    return loss, {"params": optax.apply_updates(variables["params"], step), **updates}

  net = to_nnx(model, variables)
  optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)

  @nnx.jit
  def nnx_step(net, optimizer):
    def loss_fn(net):
      return optax.softmax_cross_entropy_with_integer_labels(net(x), labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(net)
    optimizer.update(net, grads)
    return loss

  loss = nnx_step(net, optimizer)
  want_loss, want = linen_step(variables)
  np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
  got = linen_variables(net)
  assert _max_rel(got["params"], want["params"]) < RTOL
  assert _max_rel(got["batch_stats"], want["batch_stats"]) < RTOL
  assert _max_rel(got["params"], variables["params"]) > 1e-3  # the step did move the weights


def test_converted_weights_load(tmp_path):
  tv = pytest.importorskip("resnet_jax._torchvision").import_torchvision()
  import torch
  torch.manual_seed(0)
  torch_model = tv.models.resnet18(num_classes=7).eval()
  variables = resnet_jax.from_torchvision(torch_model.state_dict(), "resnet18")
  net = to_nnx("resnet18", variables, num_classes=7)
  net.eval()
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  with jax.default_matmul_precision("highest"):
    got = np.asarray(net(jnp.asarray(x)))
  # The torchvision parity bound of tests/test_convert.py (float32, 'highest' precision).
  assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5


def test_variables_of_another_model_are_refused():
  net = to_nnx("resnet20")
  other = resnet_jax.get_model("resnet32").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="do not fit this model"):
    resnet_jax.models.nnx.load_variables(net, other)


def test_public_surface():
  for name in resnet_jax.__all__:
    assert getattr(resnet_jax, name).__doc__, f"resnet_jax.{name} needs a docstring"
