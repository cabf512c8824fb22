"""Tests of resnet_jax.models.inference: the folded model computes what the plain model computes in eval mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax.models.inference import fold_batchnorm


def _random_stats(variables, seed=0):
  rng = np.random.default_rng(seed)
  stats = jax.tree_util.tree_map_with_path(
      lambda path, v: (rng.uniform(0.5, 1.5, v.shape) if path[-1].key == "var"
                       else rng.normal(0, 0.2, v.shape)).astype(np.float32),
      variables["batch_stats"])
  params = jax.tree_util.tree_map_with_path(
      lambda path, v: (v * rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
                       + (rng.normal(0, 0.1, v.shape).astype(np.float32)
                          if path[-1].key == "bias" else 0.0)),
      variables["params"])
  return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("name, overrides", [
    ("resnet18", {}),
    ("resnext50_32x4d", dict(stage_sizes=(1, 1, 1, 1))),
    ("resnet50", dict(stage_sizes=(1, 1, 2, 1), replace_stride_with_dilation=(False, True, True))),
    ("resnet20", {}),
    ("resnet10t", dict(attn="se", aa="blur")),
    ("resnetrs50", dict(stage_sizes=(1, 1, 1, 1))),
    ("ecaresnet26t", dict(stage_sizes=(1, 1, 1, 1))),
], ids=["resnet18", "resnext50-short", "resnet50-dilated-short", "resnet20-optionA",
        "timm-resnet10t-se-blur", "timm-resnetrs50-short", "timm-ecaresnet26t-short"])
def test_folded_model_matches_eval_mode(name, overrides):
  model = models.get_model(name, **overrides)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = _random_stats(jax.tree.map(np.asarray, model.init(jax.random.key(1), x)))
  folded_model, folded_vars = fold_batchnorm(model, variables)
  assert "batch_stats" not in folded_vars
  want = model.apply(variables, x)
  got = jax.jit(folded_model.apply)(folded_vars, x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
  assert (got.argmax(-1) == want.argmax(-1)).all()


def test_a_pre_activation_resnet_is_refused():
  with pytest.raises(ValueError, match="only a models.ResNet can be folded, not a ResNetV2"):
    fold_batchnorm(models.get_model("resnetv2_18"), {})


def test_folded_parameter_tree_matches_the_folded_model():
  model = models.get_model("resnet18", num_classes=10)
  x = jnp.zeros((1, 32, 32, 3))
  folded_model, folded_vars = fold_batchnorm(model, model.init(jax.random.key(0), x))
  expected = jax.eval_shape(lambda: folded_model.init(jax.random.key(0), x))
  assert jax.tree.structure(expected) == jax.tree.structure(folded_vars)
  jax.tree.map(lambda e, g: np.testing.assert_equal(e.shape, g.shape), expected, folded_vars)


def test_only_batchnorm_folds():
  model = models.get_model("resnet20", norm="group", norm_groups=8)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="only BatchNorm can be folded"):
    fold_batchnorm(model, {"params": variables["params"], "batch_stats": {}})
