"""timm's "ResNet strikes back" recipes: the BCE loss against timm's, Table 1's settings, drop rates."""


import jax
import numpy as np
import pytest

from resnet_jax import models
from resnet_jax.training import steps, train_lib
from resnet_jax.data import mixup
from resnet_jax.configs import imagenet_resnet50_rsb_a1, imagenet_resnet50_rsb_a2, imagenet_resnet50_rsb_a3

RECIPES = {"a1": imagenet_resnet50_rsb_a1, "a2": imagenet_resnet50_rsb_a2,
           "a3": imagenet_resnet50_rsb_a3}


@pytest.mark.parametrize("smoothing, threshold", [(0.0, None), (0.1, None), (0.1, 0.2), (0.0, 0.2),
                                                  (0.3, 0.05)],
                         ids=["plain", "smoothed", "a1", "a2_a3", "low_threshold"])
@pytest.mark.parametrize("targets", ["indices", "mixed"])
def test_bce_equals_timms(torch, smoothing, threshold, targets):
  """Mean over the batch of our per-example loss == timm's BinaryCrossEntropy (float64 both sides, so
  the only difference is the order of float64 sums: 1e-12 relative)."""
  import timm.loss
  num_classes, batch = 10, 8
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((batch, num_classes)) * 3
  labels = rng.integers(0, num_classes, batch)
  if targets == "mixed":  # MixUp/CutMix's soft targets, made by our own mixup.
    _, soft = mixup.mix_batch(jax.random.key(1), np.zeros((batch, 4, 4, 3), np.float32),
                              jax.nn.one_hot(labels, num_classes), mixup_alpha=0.2,
                              cutmix_alpha=1.0)
    ours_targets = np.asarray(soft, np.float64)
    assert len(np.unique(np.round(ours_targets, 6))) > 2  # really soft
    # timm's Mixup applies the smoothing to the targets before the loss; ours smooths in the loss.
    off = smoothing / num_classes
    theirs_targets = torch.from_numpy(ours_targets * (1 - smoothing) + off)
    theirs_smoothing = 0.0
  else:
    ours_targets, theirs_targets, theirs_smoothing = labels, torch.from_numpy(labels), smoothing
  loss = timm.loss.BinaryCrossEntropy(smoothing=theirs_smoothing, target_threshold=threshold)
  expected = float(loss(torch.from_numpy(logits), theirs_targets))
  with jax.enable_x64():
    ours = float(steps.binary_cross_entropy(jax.numpy.asarray(logits), jax.numpy.asarray(
        ours_targets), smoothing, threshold).astype(jax.numpy.float64).mean())
  # Our loss casts to float32 (as the train step computes it): float32's rounding is the margin.
  np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_threshold_changes_the_loss():
  """The threshold is applied (a check that cannot pass by ignoring it): smoothed off-targets of
  0.01 fall to 0 and the on-target rises to 1."""
  logits = np.zeros((1, 10), np.float32)
  plain = steps.binary_cross_entropy(logits, np.array([3]), 0.1)
  thresholded = steps.binary_cross_entropy(logits, np.array([3]), 0.1, 0.2)
  np.testing.assert_allclose(plain, thresholded)  # at logits 0 every target costs log 2
  logits[0, 3] = 5.0
  assert float(steps.binary_cross_entropy(logits, np.array([3]), 0.1, 0.2)[0]) < float(
      steps.binary_cross_entropy(logits, np.array([3]), 0.1)[0])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_holds_table_1(name):
  config = RECIPES[name].get_config()
  epochs, crop, lr, wd, smoothing, drop_path, repeated, magnitude, mix = (
      imagenet_resnet50_rsb_a1.RSB_SETTINGS[name])
  assert config.num_epochs == epochs
  assert (config.train_crop_size or config.image_size) == crop
  assert (config.val_crop_size, config.val_resize_size) == (224, 235)
  assert config.learning_rate == pytest.approx(lr)  # at batch 2048
  assert config.batch_size == 2048 and config.optimizer == "lamb" and config.lr_schedule == "cosine"
  assert (config.weight_decay, config.label_smoothing, config.drop_path_rate) == (wd, smoothing,
                                                                                 drop_path)
  assert (config.warmup, config.schedule_unit) == (5.0, "epochs")
  assert config.ra_sampler == repeated
  assert config.auto_augment == f"rand-m{magnitude}-mstd0.5-inc1"
  assert (config.mixup_alpha, config.cutmix_alpha) == (mix, 1.0)
  assert (config.loss, config.bce_target_threshold) == ("bce", 0.2)
  assert not config.model_ema and config.random_erase == 0 and config.drop_rate == 0
  # Table 1 in the docstring, each setting by its name there.
  doc = imagenet_resnet50_rsb_a1.__doc__
  for setting in ("Stoch. Depth", "Repeated Aug", "Rand Augment", "Mixup alpha", "Cutmix alpha",
                  "BCE loss", "Test crop ratio", "Warmup epochs", "Label smoothing", "LAMB"):
    assert setting in doc, setting


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_validates(name):
  train_lib.validate_config(RECIPES[name].get_config())


def test_evaluation_is_timms_for_its_resnet50_and_recorded_in_the_model_description(torch, tmp_path):
  """timm evaluates an RSB run with resnet50's data config (its pretrained_cfg, a1_in1k's): bicubic,
  crop 0.95 of the resize. The recipes evaluate so, and the checkpoints' model description says so,
  so that `resnet-jax predict`/`evaluate` on the workdir feed the model as training evaluated it."""
  import timm
  from timm.data import resolve_data_config
  want = resolve_data_config({}, model=timm.create_model("resnet50", pretrained=False))
  data = train_lib.Data(None, None, 1000, (224, 224, 3), ())
  for name, recipe in RECIPES.items():
    config = recipe.get_config()
    assert config.val_interpolation == want["interpolation"] == "bicubic", name
    assert config.val_resize_size == int(224 / want["crop_pct"]), name  # timm's floor.
    spec = train_lib.model_spec(config, data, str(tmp_path))
    assert (spec.interpolation, spec.resize_size, spec.image_size) == ("bicubic", 235, 224), name


def test_drop_rates_are_model_overrides_only_when_set(tmp_path):
  from configs import digits
  config = digits.get_config()
  data = train_lib.Data(None, None, 10, (8, 8, 1), ())
  assert "drop_path_rate" not in train_lib.model_spec(config, data, str(tmp_path)).model_overrides
  with config.unlocked():
    config.drop_path_rate = 0.1
  spec = train_lib.model_spec(config, data, str(tmp_path))
  assert spec.model_overrides["drop_path_rate"] == 0.1


def test_train_step_reports_timms_bce_of_its_logits(torch):
  """One real step with loss='bce', threshold 0.2 and smoothing 0.1: its loss is timm's
  BinaryCrossEntropy of the train-mode logits the model gives on the same batch (float32 both)."""
  import jax.numpy as jnp
  import optax
  import timm.loss
  model = models.get_model("resnet20", num_classes=10, stage_sizes=(1, 1, 1), in_channels=1)
  tx = optax.sgd(0.1)
  state = train_lib.initial_state(model, tx, (8, 8, 1), seed=0)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 8, 8, 1), np.uint8),
           "label": rng.integers(0, 10, 8).astype(np.int32)}
  _, metrics = jax.jit(lambda s, b: steps.train_step(
      s, b, model=model, tx=tx, schedule=optax.constant_schedule(0.1), mean=(84.0,), std=(105.0,),
      label_smoothing=0.1, loss="bce", bce_target_threshold=0.2))(state, batch)
  images = (batch["image"].astype(np.float32) - 84.0) / 105.0
  logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images,
                          train=True, mutable=["batch_stats"])
  expected = timm.loss.BinaryCrossEntropy(smoothing=0.1, target_threshold=0.2)(
      torch.from_numpy(np.array(logits)), torch.from_numpy(batch["label"].astype(np.int64)))
  np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5)
  assert jnp.isfinite(metrics["loss"])
