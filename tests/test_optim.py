"""optim against torch.optim with torchvision's parameter groups, and the LARS/LAMB exclusions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from resnet_jax.training import optim

WD, NORM_WD, BIAS_WD = 1e-2, 0.0, 0.5  # Three distinct values, so a wrong group shows.


def _models():
  """A torch net of a conv, BatchNorm, a conv with a bias (as squeeze-excitation's), GroupNorm and
  a linear layer, and the same weights as a Flax-named tree (torch layouts: the decay is
  elementwise, only the names and ranks matter)."""
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, bias=False), torch.nn.BatchNorm2d(3),
                            torch.nn.Conv2d(3, 3, 1), torch.nn.GroupNorm(1, 3),
                            torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4))
  with torch.no_grad():
    for norm in (net[1], net[3]):
      norm.weight.normal_()
      norm.bias.normal_()
  names = {"conv1/kernel": net[0].weight, "bn1/scale": net[1].weight, "bn1/bias": net[1].bias,
           "se_fc1/kernel": net[2].weight, "se_fc1/bias": net[2].bias,
           "gn/scale": net[3].weight, "gn/bias": net[3].bias,
           "fc/kernel": net[5].weight, "fc/bias": net[5].bias}
  return net, names


def _tree(flat):
  tree = {}
  for path, value in flat.items():
    module, leaf = path.split("/")
    tree.setdefault(module, {})[leaf] = jnp.asarray(value)
  return tree


def _reference_groups(net, weight_decay, norm_weight_decay, bias_weight_decay):
  """references/classification/utils.set_weight_decay's grouping, with custom key 'bias'."""
  groups = {"other": [], "norm": [], "bias": []}
  for module in net.modules():
    for name, p in module.named_parameters(recurse=False):
      if name == "bias":
        groups["bias"].append(p)
      elif isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
        groups["norm"].append(p)
      else:
        groups["other"].append(p)
  rates = {"other": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
  return [{"params": ps, "weight_decay": rates[k]} for k, ps in groups.items() if ps]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_groups_and_clipping_equal_torch(name):
  net, names = _models()
  lr, clip = 0.1, 0.5
  groups = _reference_groups(net, WD, NORM_WD, BIAS_WD)
  torch_opt = (torch.optim.SGD(groups, lr=lr, momentum=0.9) if name == "sgd"
               else torch.optim.AdamW(groups, lr=lr))
  params = _tree({k: v.detach().numpy().copy() for k, v in names.items()})
  tx = optim.create(name, optax.constant_schedule(lr), weight_decay=WD, momentum=0.9,
                    norm_weight_decay=NORM_WD, bias_weight_decay=BIAS_WD, clip_grad_norm=clip)
  state = tx.init(params)
  rng = np.random.default_rng(0)
  for _ in range(3):
    grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in names.items()}
    for k, v in names.items():
      v.grad = torch.from_numpy(grads[k].copy())
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    torch_opt.step()
    updates, state = tx.update(_tree(grads), state, params)
    params = optax.apply_updates(params, updates)
  for k, v in names.items():
    module, leaf = k.split("/")
    np.testing.assert_allclose(params[module][leaf], v.detach().numpy(), rtol=2e-5, atol=2e-6,
                               err_msg=k)  # float32, 3 steps of a few ops: ~10 ulp.


def test_decay_rates_follow_torchvision_groups():
  _, names = _models()
  rates = optim.decay_rates(_tree({k: v.detach().numpy() for k, v in names.items()}),
                            WD, NORM_WD, BIAS_WD)
  assert rates == {"conv1": {"kernel": WD}, "bn1": {"scale": NORM_WD, "bias": BIAS_WD},
                   "se_fc1": {"kernel": WD, "bias": BIAS_WD},
                   "gn": {"scale": NORM_WD, "bias": BIAS_WD}, "fc": {"kernel": WD, "bias": BIAS_WD}}
  # Without a bias group, a conv's or a linear layer's bias (a vector beside a kernel: SE's, the
  # classifier's, ResNetV2's 1x1-conv head) decays as a weight; the norms' vectors as norms.
  rates = optim.decay_rates(_tree({k: v.detach().numpy() for k, v in names.items()}), WD, 0.0)
  assert rates["bn1"] == rates["gn"] == {"scale": 0.0, "bias": 0.0}
  assert rates["fc"]["bias"] == rates["se_fc1"]["bias"] == WD


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_lars_and_lamb_neither_decay_nor_adapt_norm_and_bias(name):
  _, names = _models()
  params = _tree({k: v.detach().numpy() for k, v in names.items()})
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  tx = optim.create(name, optax.constant_schedule(0.1), weight_decay=0.5)
  updates, _ = tx.update(grads, tx.init(params), params)
  plain = optim.create("lars" if name == "lars" else "lamb", optax.constant_schedule(0.1),
                       weight_decay=0.0)
  no_decay, _ = plain.update(grads, plain.init(params), params)
  for module, leaf in (("bn1", "scale"), ("bn1", "bias"), ("fc", "bias")):
    np.testing.assert_allclose(updates[module][leaf], no_decay[module][leaf], rtol=1e-6)
    if name == "lars":  # Not adapted either: plain momentum SGD's first step, -lr * g.
      np.testing.assert_allclose(updates[module][leaf], -0.1 * 0.3, rtol=1e-6)
  assert not np.allclose(updates["conv1"]["kernel"], no_decay["conv1"]["kernel"])


def test_poly_schedule_equals_torch_polynomial_lr():
  warmup, total, power = 5, 45, 2.0
  fn = optim.learning_rate_schedule(learning_rate=2.0, kind="poly", total_steps=total,
                                        warmup_steps=warmup, power=power)
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
  sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total - warmup, power=power)
  for step in range(warmup, total + 3):
    assert float(fn(step)) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-5, abs=1e-7), step
    opt.step()
    sched.step()
