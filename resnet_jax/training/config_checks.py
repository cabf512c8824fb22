"""Checks of every training config key: one rule per key, each error one line naming the key.

`RULES` maps each key of configs/default.py (dotted for nested ones) to a check that returns what
was expected, or None when the value is fine; `CROSS_CHECKS` relate keys to each other; `ON_RESUME`
says which keys a resumed run may change. A new key gets its rule and its resume rule here, beside
the others (tests/test_configs.py fails for a key without them).
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any, Callable, NamedTuple, Optional

import ml_collections

from resnet_jax import models
from resnet_jax.data import autoaugment, image_ops, input_pipeline
from resnet_jax.training import optim, sharding, steps

Rule = Callable[[Any], Optional[str]]  # The value -> None, or 'expected ...'.


class ConfigError(ValueError):
  """A config value the trainer cannot use; the message names the key."""


def _is_int(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def integer(low: Optional[int] = None) -> Rule:
  def check(x):
    if not _is_int(x) or (low is not None and x < low):
      return "an integer" + (f" >= {low}" if low is not None else "")
  return check


def integer_in(low: int, high: int) -> Rule:
  def check(x):
    if not _is_int(x) or not low <= x <= high:
      return f"an integer in [{low}, {high}]"
  return check


def number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> Rule:
  """A finite real number in the interval; `*_open` excludes that end."""
  def check(x):
    ok = _is_number(x) and (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
      if high == math.inf:
        return "a finite number" + ("" if low == -math.inf else f" {'>' if low_open else '>='} {low}")
      left, right = "(" if low_open else "[", ")" if high_open else "]"
      return f"a finite number in {left}{low}, {high}{right}"
  return check


def boolean(x) -> Optional[str]:
  if not isinstance(x, bool):
    return "True or False"


def string(*, nonempty: bool = False) -> Rule:
  def check(x):
    if not isinstance(x, str) or (nonempty and not x):
      return "a non-empty string" if nonempty else "a string"
  return check


def one_of(choices: Callable[[], Any]) -> Rule:
  """`choices` is called at check time, so registries filled later (models, augmentations) count."""
  def check(x):
    allowed = tuple(choices())
    if x not in allowed:
      return f"one of {allowed}"
  return check


def sequence_of(rule: Rule, *, nondecreasing: bool = False) -> Rule:
  def check(x):
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
      return "a tuple"
    for value in x:
      expected = rule(value)
      if expected:
        return f"a tuple of values each {expected}"
    if nondecreasing and list(x) != sorted(x):
      return "a tuple in increasing order"
  return check


def _models():
  return models.list_models()


def _augmentations():
  return input_pipeline.AUGMENTATIONS


def _eval_protocols():
  return input_pipeline.EVAL_PROTOCOLS


def _auto_augment(x) -> Optional[str]:
  from resnet_jax.data import timm_augment
  if x not in autoaugment.POLICIES and not (isinstance(x, str) and timm_augment.is_rand_augment(x)):
    return f"one of {autoaugment.POLICIES} or a timm RandAugment string ('rand-m7-mstd0.5-inc1')"


def _model_overrides(x) -> Optional[str]:
  import dataclasses

  fields = {f.name for f in dataclasses.fields(models.ResNet)} - {"parent", "name"}
  unknown = set(x) - fields
  if unknown:
    return f"fields of models.ResNet; unknown: {sorted(unknown)}, known: {sorted(fields)}"


RULES: dict[str, Rule] = {
    # Model.
    "model": one_of(_models),
    "model_overrides": _model_overrides,
    "num_classes": integer(0),
    "dtype": one_of(lambda: models.COMPUTE_DTYPES),
    "init_from": string(),
    # Data.
    "source": one_of(lambda: input_pipeline.SOURCES),
    "dataset": string(),
    "data_dir": string(),
    "train_split": string(nonempty=True),
    "eval_split": string(nonempty=True),
    "image_size": integer(1),
    "augment": one_of(_augmentations),
    "auto_augment": _auto_augment,
    "ra_magnitude": integer_in(0, 30),  # A bin of RandAugment's 31.
    "augmix_severity": integer_in(1, 10),  # torchvision's AugMix range.
    "random_erase": number(0, 1),
    "ra_sampler": boolean,
    "ra_reps": integer(1),
    "eval_protocol": one_of(_eval_protocols),
    "eval_crop_fraction": number(0, 1, low_open=True),
    "train_crop_size": integer(0),
    "val_resize_size": integer(0),
    "val_crop_size": integer(0),
    "val_interpolation": one_of(lambda: image_ops.INTERPOLATIONS),
    "mean": sequence_of(number()),  # Lengths: see CROSS_CHECKS.
    "std": sequence_of(number(0, low_open=True)),
    "synthetic_examples": integer(1),
    "num_data_threads": integer(0),
    "fast_decode": boolean,
    "exact_input": boolean,
    "data_processes": integer(0),
    "prefetch_batches": integer(0),
    "seed": integer(),
    # Optimisation.
    "batch_size": integer(1),
    "num_epochs": number(0),
    "num_train_steps": integer(-1),
    "base_learning_rate": number(0),
    "learning_rate": number(0),
    "lr_schedule": one_of(lambda: optim.SCHEDULES),
    "lr_end": number(0),
    "lr_power": number(0, low_open=True),
    "optimizer": one_of(lambda: optim.OPTIMIZERS),
    "norm_weight_decay": number(),  # < 0: weight_decay. See CROSS_CHECKS.
    "bias_weight_decay": number(),
    "clip_grad_norm": number(0),
    "grad_accum_steps": integer(1),
    "schedule_unit": one_of(lambda: ("epochs", "steps")),
    "lr_boundaries": sequence_of(number(0), nondecreasing=True),
    "lr_decay_factor": number(0),
    "warmup": number(0),
    "warmup_type": one_of(lambda: optim.WARMUPS),
    "warmup_factor": number(0),
    "momentum": number(0, 1),
    "nesterov": boolean,
    "weight_decay": number(0),
    "weight_decay_exclude_bn_bias": boolean,
    "label_smoothing": number(0, 1, high_open=True),
    "loss": one_of(lambda: steps.LOSSES),
    "bce_target_threshold": number(high=1, high_open=True),  # < 0: none.
    "drop_path_rate": number(0, 1, high_open=True),
    "drop_rate": number(0, 1, high_open=True),
    "mixup_alpha": number(0),
    "cutmix_alpha": number(0),
    "model_ema": boolean,
    "model_ema_steps": integer(1),
    "model_ema_decay": number(0, 1),
    # Devices.
    "parallelism": one_of(lambda: sharding.LAYOUTS),
    "sync_batch_norm": boolean,
    "distributed.initialize": boolean,
    "distributed.coordinator_address": string(),
    "distributed.num_processes": integer(0),
    "distributed.process_id": integer(-1),
    # Loop, logging, checkpoints.
    "log_every_steps": integer(1),
    "eval_every_steps": integer(0),
    "checkpoint_every_steps": integer(1),
    # At least one: the newest checkpoint, the one a restart resumes from, is never deleted.
    "keep_checkpoints": integer(1),
    "async_checkpoints": boolean,
    "progress_bar": boolean,
}


def input_channels(config) -> int:
  """The model's input channels: `model_overrides` holds only the ResNet fields a recipe changes, so
  without `in_channels` there the model's own default applies."""
  return config.model_overrides.get("in_channels", models.ResNet.in_channels)


def _per_channel(key: str) -> Callable:
  def check(config) -> Optional[tuple[str, str]]:
    channels = input_channels(config)
    if len(config[key]) != channels:
      return key, f"one value per input channel ({channels}, model_overrides.in_channels)"
  return check


def _some_training(config) -> Optional[tuple[str, str]]:
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    return "num_train_steps", "> 0, or config.num_epochs > 0"


def _uint8_augment(config) -> Optional[tuple[str, str]]:
  if config.auto_augment and config.augment == "paper":  # 'paper' ends in float lighting noise.
    return "auto_augment", "'' with augment='paper' (the policies need uint8 images)"


def _rgb_augment(config) -> Optional[tuple[str, str]]:
  channels = input_channels(config)
  if config.augment == "paper" and channels != 3:  # Its lighting noise is a shift of RGB colours.
    return "augment", (f"an augmentation for {channels}-channel input ('paper' adds lighting noise "
                       "along the principal axes of RGB colour, 3 channels)")


def _fixres(config) -> Optional[tuple[str, str]]:
  crop = config.val_crop_size or config.image_size
  if config.val_resize_size and config.val_resize_size < crop:
    return "val_resize_size", f"0 or >= the evaluation crop ({crop})"


def _micro_batches(config) -> Optional[tuple[str, str]]:
  if config.batch_size % config.grad_accum_steps:
    return "grad_accum_steps", f"a divisor of batch_size ({config.batch_size})"


def _bce_threshold(config) -> Optional[tuple[str, str]]:
  if config.bce_target_threshold >= 0 and config.loss != "bce":
    return "bce_target_threshold", "< 0 unless loss='bce'"


def _decay_groups(config) -> Optional[tuple[str, str]]:
  for key in ("norm_weight_decay", "bias_weight_decay"):
    if config[key] >= 0 and config.optimizer in ("lars", "lamb"):
      return key, "< 0 with optimizer 'lars'/'lamb' (they exclude BatchNorm and biases themselves)"
    if config[key] >= 0 and config.weight_decay_exclude_bn_bias:
      return key, "< 0 with weight_decay_exclude_bn_bias=True (that already sets it to 0)"


# Each returns (key, expected) for a value that is fine alone but not with the others.
CROSS_CHECKS: tuple[Callable, ...] = (_per_channel("mean"), _per_channel("std"), _some_training,
                                      _uint8_augment, _rgb_augment, _decay_groups,
                                      _fixres, _micro_batches, _bce_threshold)


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every key, nested ConfigDicts as 'outer.inner'; `model_overrides` counts as one value."""
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict) and key != "model_overrides":
      keys += flat_keys(value, f"{prefix}{key}.")
    else:
      keys.append(prefix + key)
  return keys


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def _error(key: str, value: Any, expected: str) -> ConfigError:
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  return ConfigError(f"config.{key}={value!r}: expected {expected}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, one line naming the key, for the first value the trainer cannot use.

  A key without a rule (one added to a recipe but not here) is not checked.
  """
  for key in flat_keys(config):
    rule = RULES.get(key)
    value = _get(config, key)
    expected = rule(value) if rule else None
    if expected:
      raise _error(key, value, expected)
  for check in CROSS_CHECKS:
    problem = check(config)
    if problem:
      raise _error(problem[0], _get(config, problem[0]), problem[1])


# ----------------------------------------------------------------------------------------------
# On resume: which keys a rerun of a workdir may change. A resumed run continues the saved state and
# data position; a key that shaped them must keep its value, or the run is no longer the one that
# `config.json` and the checkpoints describe. tests/test_configs.py walks every key of
# configs/default.py through this table, so a new key gets its line here too.


class ResumeRule(NamedTuple):
  may_change: bool
  why: str  # For a fixed key: what a change would silently break (the refusal says it).


def _free(why: str) -> ResumeRule:
  return ResumeRule(True, why)


def _fixed(why: str) -> ResumeRule:
  return ResumeRule(False, why)


_MODEL = _fixed("the saved weights are of this model")
_DATA = _fixed("the saved data position indexes this data's shuffled order")
_AUGMENT = _fixed("the rest of the run would see other inputs than its first part")
_OPTIMIZER = _fixed("the saved optimizer state and learning-rate schedule are of this recipe")
_LOSS = _fixed("the rest of the run would minimise another loss than its first part")
_EVAL = _fixed("the evaluation curve would mix two measures")
_EMA = _fixed("the saved EMA was averaged this way")
_LENGTH = _free("a run may be lengthened or shortened; schedules that depend on its length (cosine, "
                "poly, the EMA's decay bound) follow the new length from the resumed step on")
_CADENCE = _free("when things are logged, evaluated or saved does not change the trained state")
_SPEED = _free("how fast the input is read, not what is read")
_LAUNCH = _free("how the processes find each other (their number is checked against the checkpoint)")

ON_RESUME: dict[str, ResumeRule] = {
    # Model.
    "model": _MODEL,
    "model_overrides": _MODEL,
    "num_classes": _MODEL,
    "dtype": _fixed("every step's arithmetic is of this dtype ('auto' compares as written)"),
    "init_from": _free("only a fresh run reads it; a resumed one starts from its own checkpoint"),
    # Data.
    "source": _DATA,
    "dataset": _DATA,
    # A moved dataset is the same data: its size and class names are checked against those each
    # checkpoint records (train_lib.run_record), so another dataset at the new path is refused.
    "data_dir": _free("a path: the same data moved elsewhere"),
    "train_split": _DATA,
    "eval_split": _EVAL,
    "synthetic_examples": _DATA,
    "seed": _fixed("the saved data position indexes this seed's shuffle; augmentation and MixUp "
                   "draws are keyed by it"),
    "ra_sampler": _DATA,
    "ra_reps": _DATA,
    "image_size": _AUGMENT,
    "train_crop_size": _AUGMENT,
    "augment": _AUGMENT,
    "auto_augment": _AUGMENT,
    "ra_magnitude": _AUGMENT,
    "augmix_severity": _AUGMENT,
    "random_erase": _AUGMENT,
    "fast_decode": _fixed("reduced-scale JPEG decoding gives other pixels than full decoding"),
    "exact_input": _fixed("PIL's resize gives other training pixels than the fast one"),
    "mean": _MODEL,
    "std": _MODEL,
    "eval_protocol": _EVAL,
    "eval_crop_fraction": _EVAL,
    "val_resize_size": _EVAL,
    "val_crop_size": _EVAL,
    "val_interpolation": _EVAL,
    "num_data_threads": _SPEED,
    "prefetch_batches": _SPEED,
    "data_processes": _fixed("the saved data position holds one entry per input worker process"),
    # Optimisation.
    "batch_size": _fixed("the saved data position counts batches of this size, and the learning "
                         "rate is scaled by it"),
    "num_epochs": _LENGTH,
    "num_train_steps": _LENGTH,
    "base_learning_rate": _OPTIMIZER,
    "learning_rate": _OPTIMIZER,
    "lr_schedule": _OPTIMIZER,
    "schedule_unit": _OPTIMIZER,
    "lr_boundaries": _OPTIMIZER,
    "lr_decay_factor": _OPTIMIZER,
    "warmup": _OPTIMIZER,
    "warmup_type": _OPTIMIZER,
    "warmup_factor": _OPTIMIZER,
    "lr_end": _OPTIMIZER,
    "lr_power": _OPTIMIZER,
    "optimizer": _OPTIMIZER,
    "momentum": _OPTIMIZER,
    "nesterov": _OPTIMIZER,
    "weight_decay": _OPTIMIZER,
    "weight_decay_exclude_bn_bias": _OPTIMIZER,
    "norm_weight_decay": _OPTIMIZER,
    "bias_weight_decay": _OPTIMIZER,
    "clip_grad_norm": _OPTIMIZER,
    "grad_accum_steps": _fixed("BatchNorm's statistics are taken per micro-batch"),
    "label_smoothing": _LOSS,
    "loss": _LOSS,
    "bce_target_threshold": _LOSS,
    "drop_path_rate": _MODEL,
    "drop_rate": _MODEL,
    "mixup_alpha": _LOSS,
    "cutmix_alpha": _LOSS,
    "model_ema": _EMA,
    "model_ema_steps": _EMA,
    "model_ema_decay": _EMA,
    # Devices.
    "parallelism": _fixed("BatchNorm's statistics and the batch's split over devices follow it"),
    "sync_batch_norm": _fixed("BatchNorm's statistics are per device or global by it"),
    "distributed.initialize": _LAUNCH,
    "distributed.coordinator_address": _LAUNCH,
    "distributed.num_processes": _LAUNCH,
    "distributed.process_id": _LAUNCH,
    # Loop, logging, checkpoints.
    "log_every_steps": _CADENCE,
    "eval_every_steps": _CADENCE,
    "checkpoint_every_steps": _CADENCE,
    "keep_checkpoints": _CADENCE,
    "async_checkpoints": _CADENCE,
    "progress_bar": _free("what is shown while training"),
}


def as_json(config: ml_collections.ConfigDict) -> dict:
  """The config as JSON holds it (`config.json`, a checkpoint's meta): references resolved, tuples
  as lists."""
  return json.loads(config.to_json())


def flat_values(config: Any) -> dict[str, Any]:
  """{dotted key: value} of a config or of its JSON (`config.json`, a checkpoint's meta), values as
  JSON has them, so that a saved config and a live one compare equal."""
  if isinstance(config, ml_collections.ConfigDict):
    config = as_json(config)
  out = {}

  def visit(prefix: str, tree: dict) -> None:
    for key, value in tree.items():
      if isinstance(value, dict) and key != "model_overrides":
        visit(f"{prefix}{key}.", value)
      else:
        out[prefix + key] = json.loads(json.dumps(value))
  visit("", config)
  return out


# Keys added after runs were already trained, with the value that earlier runs behaved as: a saved
# config without the key is compared as if it held that value.
ADDED_KEYS: dict[str, Any] = {
    "val_interpolation": "bilinear",  # Evaluation resized bilinear before the key existed.
}


def resume_changes(trained: Any, asked: Any) -> list[tuple[str, Any, Any]]:
  """The keys that differ between the config a workdir was trained with and the one asked for now.

  Args:
    trained: the saved config (a ConfigDict or its JSON).
    asked: this run's config.

  Returns:
    (key, trained value, asked value) for each difference, all of keys that may change on resume.

  Raises:
    ConfigError: one line naming the first key that may not change, its two values and why. A key
      that is not in `ON_RESUME` counts as one that may not; one that only one side has (added or
      removed since the run was trained) is not compared, unless `ADDED_KEYS` says how runs
      trained before it behaved.
  """
  old, new = flat_values(trained), flat_values(asked)
  old = {**{k: v for k, v in ADDED_KEYS.items() if k in new}, **old}
  changes = []
  for key in new:
    if key not in old or old[key] == new[key]:
      continue
    rule = ON_RESUME.get(key, ResumeRule(False, "it has no rule in config_checks.ON_RESUME"))
    if not rule.may_change:
      raise ConfigError(
          f"config.{key}: this run was trained with {old[key]!r}; you asked for {new[key]!r} (it "
          f"may not change on resume: {rule.why}). Resume with {old[key]!r}, or use another "
          "workdir; nothing was changed")
    changes.append((key, old[key], new[key]))
  return changes
