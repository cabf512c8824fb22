"""Tests of configs/: every recipe loads, is complete and locked, names its run command, and the
paper's recipes hold the paper's numbers; train.py rejects unknown keys."""

import ast
import importlib
import json
import os
import subprocess
import sys

import pytest

from configs import default
from resnet_jax.training import config_checks, train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
               if f.endswith(".py") and not f.startswith("_"))


def _load(name):
  return importlib.import_module(f"configs.{name}")


def test_expected_recipes_exist():
  assert {"default", "imagenet_resnet50", "cifar10_resnet20", "cifar10_resnet56", "cifar10_resnet110",
          "cifar10_resnet18", "digits", "synthetic_benchmark"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_is_complete_locked_and_documented(name):
  module = _load(name)
  config = module.get_config()
  assert set(config.keys()) == set(default.get_config().keys())
  train_lib.validate_config(config)
  with pytest.raises(AttributeError, match="locked"):
    config.lerning_rate = 0.1
  assert f"python train.py --config configs/{name}.py --workdir" in " ".join(module.__doc__.split())


def test_trainer_reads_only_keys_in_default():
  """Every `config.<key>` read in train_lib exists in default.py (a static check of the source)."""
  source = open(os.path.join(ROOT, "resnet_jax", "training", "train_lib.py")).read()
  keys = {node.attr for node in ast.walk(ast.parse(source))
          if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id == "config"}
  keys -= {"get", "keys", "items", "lock", "unlocked"}
  assert keys <= set(default.get_config().keys()), keys - set(default.get_config().keys())
  assert len(keys) > 30


def test_imagenet_recipe_is_the_papers():
  c = _load("imagenet_resnet50").get_config()
  assert (c.model, c.batch_size, c.num_epochs, c.lr_boundaries, c.schedule_unit) == (
      "resnet50", 256, 90.0, (30, 60), "epochs")
  assert c.learning_rate == pytest.approx(0.1) and c.weight_decay == 1e-4 and c.momentum == 0.9
  assert c.augment == "torchvision" and c.eval_crop_fraction == 0.875 and c.image_size == 224


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_cifar_recipes_are_the_papers(depth):
  c = _load(f"cifar10_resnet{depth}").get_config()
  assert c.model == f"resnet{depth}" and c.batch_size == 128
  assert c.learning_rate == pytest.approx(0.1) and c.weight_decay == 1e-4 and c.momentum == 0.9
  assert (c.lr_boundaries, c.schedule_unit, c.num_train_steps) == ((32_000, 48_000), "steps", 64_000)
  assert (c.train_split, c.eval_split, c.augment) == ("train[:45000]", "train[45000:]", "cifar")
  if depth == 110:
    assert (c.warmup, c.warmup_type, c.warmup_factor) == (400, "constant", 0.1)


def test_learning_rate_follows_a_batch_size_override():
  c = _load("cifar10_resnet20").get_config()
  c.batch_size = 512
  assert c.learning_rate == pytest.approx(0.4)


def test_unknown_key_on_the_command_line_is_an_error(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/digits.py",
                         f"--workdir={tmp_path}", "--config.lerning_rate=0.1"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip() == ("train.py: error: --config.lerning_rate: no such config key; did you "
                                 "mean config.learning_rate?"), proc.stderr  # one line, no traceback
  assert not os.listdir(tmp_path)  # Nothing started, nothing written.


def test_a_missing_config_file_or_recipe_is_one_line(tmp_path, capsys):
  from resnet_jax import train
  for spec, message in ((str(tmp_path / "nope.py"), f"no config file at {tmp_path / 'nope.py'}"),
                        ("digts", "no such recipe (did you mean digits?")):
    assert train.main(["--config", spec, "--workdir", str(tmp_path / "run")], prog="train.py") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: --config {spec}: {message}") and err.count("\n") == 1, err
  assert not os.listdir(tmp_path)


def test_missing_data_and_a_diverged_recipe_are_one_line(tmp_path, capsys):
  """Errors that surface once training starts (the data's folder, NaN) are one line too, as
  `resnet-jax`'s other commands print them; --debug shows the traceback."""
  from resnet_jax import cli
  missing = ["--config", "digits", "--workdir", str(tmp_path / "a"), "--config.source=folder",
             f"--config.data_dir={tmp_path / 'nowhere'}"]
  assert cli.train_main(missing, prog="train.py") == 2
  err = capsys.readouterr().err
  assert err.startswith("train.py: error: image folder ") and str(tmp_path / "nowhere") in err
  assert err.count("\n") == 1, err
  with pytest.raises(FileNotFoundError):
    cli.train_main(missing + ["--debug"], prog="train.py")
  diverging = ["--config", "digits", "--workdir", str(tmp_path / "b"), "--config.learning_rate=1e30",
               "--config.num_train_steps=3", "--config.schedule_unit=steps", "--config.lr_boundaries=()",
               "--config.log_every_steps=1", "--config.progress_bar=False"]
  assert cli.train_main(diverging, prog="train.py") == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("train.py: error: the training loss or the updated parameters are not finite")


# One value each rule must refuse; the cases first (each once crashed deep inside training
# or was silently accepted).
BAD_VALUES = {
    "checkpoint_every_steps": 0, "log_every_steps": 0, "eval_every_steps": -1, "keep_checkpoints": 0,
    "mean": (84.0, 84.0, 84.0), "std": (0.0,),
    "model": "resnet21", "model_overrides": {"widths": 3}, "num_classes": -1, "dtype": "float16",
    "init_from": 3, "source": "csv", "dataset": None, "data_dir": 1, "train_split": "",
    "eval_split": "", "image_size": 0, "augment": "mixup", "eval_protocol": "five_crop",
    "eval_crop_fraction": 1.5, "synthetic_examples": 0, "num_data_threads": -1,
    "prefetch_batches": -1, "seed": 0.5, "batch_size": 0, "num_epochs": float("nan"),
    "num_train_steps": -2, "base_learning_rate": -0.1, "learning_rate": float("inf"),
    "lr_schedule": "linear", "schedule_unit": "iterations", "lr_boundaries": (60, 30),
    "lr_decay_factor": -1.0, "warmup": -1.0, "warmup_type": "cosine", "warmup_factor": -0.5,
    "momentum": 1.5, "nesterov": "yes", "weight_decay": -1e-4, "weight_decay_exclude_bn_bias": 1,
    "label_smoothing": 1.0, "parallelism": "pjit", "sync_batch_norm": None,
    "distributed.initialize": "true", "distributed.coordinator_address": None,
    "distributed.num_processes": -1, "distributed.process_id": -2, "async_checkpoints": 0,
    "progress_bar": "no", "auto_augment": "autoaugment", "ra_magnitude": 31, "augmix_severity": 0,
    "random_erase": 1.5, "mixup_alpha": -0.2, "cutmix_alpha": float("nan"),
    "model_ema": 1, "model_ema_steps": 0, "model_ema_decay": 1.5, "lr_end": -1.0, "lr_power": 0.0,
    "optimizer": "adam", "norm_weight_decay": float("nan"), "bias_weight_decay": "0",
    "clip_grad_norm": -1.0, "train_crop_size": -1, "val_resize_size": 8, "val_crop_size": 1.5,
    "val_interpolation": "lanczos",
    "fast_decode": "yes", "exact_input": 1, "data_processes": -1,
    "ra_sampler": "yes", "ra_reps": 0, "grad_accum_steps": 7,
    "loss": "ce", "bce_target_threshold": 1.5, "drop_path_rate": 1.0, "drop_rate": -0.1,
}


def test_every_key_has_a_rule_and_a_bad_value():
  keys = set(config_checks.flat_keys(default.get_config()))
  assert keys - set(config_checks.RULES) == set(), "add a rule to resnet_jax/training/config_checks.py RULES"
  assert set(config_checks.RULES) - keys == set(), "a rule for a key that configs/default.py lacks"
  assert keys <= set(BAD_VALUES), "add a refused value to BAD_VALUES"


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_a_bad_value_is_one_line_naming_the_key(key):
  config = _load("digits").get_config()
  *outer, last = key.split(".")
  node = config
  for part in outer:
    node = node[part]
  with node.ignore_type():
    node[last] = BAD_VALUES[key]
  with pytest.raises(config_checks.ConfigError) as error:
    train_lib.validate_config(config)
  message = str(error.value)
  assert message.startswith(f"config.{key}=") and "expected" in message and "\n" not in message


# Values fine alone but not together: (recipe, changes, the key the error names). Every entry of
# config_checks.CROSS_CHECKS must refuse at least one of them (checked below).
BAD_COMBINATIONS = {
    "3 means for the 1-channel digits": ("digits", {"mean": (84.0, 84.0, 84.0)}, "mean"),
    "3 stds for the 1-channel digits": ("digits", {"std": (105.0, 105.0, 105.0)}, "std"),
    "no steps and no epochs": ("digits", {"num_train_steps": 0, "num_epochs": 0.0}, "num_train_steps"),
    "a uint8 policy after float lighting": ("default", {"augment": "paper", "auto_augment": "ta_wide"},
                                            "auto_augment"),
    "RGB lighting on the 1-channel digits": ("digits", {"augment": "paper"}, "augment"),
    "RGB lighting on a 4-channel model": ("default", {"augment": "paper", "mean": (1.0,) * 4,
                                                      "std": (1.0,) * 4,
                                                      "model_overrides": {"in_channels": 4}}, "augment"),
    "LAMB with its own decay groups": ("default", {"optimizer": "lamb", "norm_weight_decay": 0.0},
                                       "norm_weight_decay"),
    "a resize below the crop": ("default", {"val_resize_size": 200}, "val_resize_size"),
    "micro-batches that do not divide": ("digits", {"grad_accum_steps": 5}, "grad_accum_steps"),
    "a BCE threshold without BCE": ("default", {"bce_target_threshold": 0.2}, "bce_target_threshold"),
}


def _recipe_with(name: str, changes: dict):
  config = _load(name).get_config()
  with config.unlocked():
    for k, v in changes.items():
      config[k] = config_checks.ml_collections.ConfigDict(v) if isinstance(v, dict) else v
  return config


@pytest.mark.parametrize("case", sorted(BAD_COMBINATIONS))
def test_values_fine_alone_but_not_together_are_one_line_naming_the_key(case):
  name, changes, key = BAD_COMBINATIONS[case]
  config = _recipe_with(name, changes)
  with pytest.raises(config_checks.ConfigError) as error:
    train_lib.validate_config(config)
  message = str(error.value)
  assert message.startswith(f"config.{key}=") and "expected" in message and "\n" not in message


def test_every_cross_check_refuses_one_of_the_combinations():
  fired = set()
  for name, changes, _ in BAD_COMBINATIONS.values():
    config = _recipe_with(name, changes)
    fired |= {check for check in config_checks.CROSS_CHECKS if check(config)}
  assert fired == set(config_checks.CROSS_CHECKS), "add a combination to BAD_COMBINATIONS"


def test_a_bad_value_stops_train_py_with_one_line_and_writes_nothing(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/digits.py",
                         f"--workdir={tmp_path}", "--config.checkpoint_every_steps=0"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "train.py: error: config.checkpoint_every_steps=0: expected an integer >= 1"), proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_the_main_job_reaches_98_percent_on_held_out_digits(tmp_path):
  """What README.md promises of `make train`: the default config, run end to end through train.py."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/digits.py",
                         f"--workdir={tmp_path}", "--config.progress_bar=False"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  from resnet_jax.training import metrics
  evals = metrics.read_metrics(str(tmp_path))["eval"]
  final = evals[max(evals)]
  assert final["count"] == 360  # every held-out digit, once
  assert final["top1"] >= 0.98


# ----------------------------------------------------------------------------------------------
# On resume: every key may change or may not, and the rule is applied key by key.

def _changed(value):
  """A value that differs from `value` (of any key's kind, so a new key needs no entry here)."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1 if abs(value) < 1e6 else value * 2
  if isinstance(value, str):
    return value + "_other"
  if isinstance(value, (tuple, list)):
    return list(value) + [1]
  if isinstance(value, dict):
    return dict(value, in_channels=7)
  raise AssertionError(f"no changed value for {value!r}: extend _changed")


def test_every_key_is_classified_once_for_resume():
  keys = set(config_checks.flat_keys(default.get_config()))
  table = config_checks.ON_RESUME
  assert keys - set(table) == set(), "classify the key in resnet_jax/training/config_checks.py ON_RESUME"
  assert set(table) - keys == set(), "a resume rule for a key that configs/default.py lacks"
  # A dict literal keeps the last of two equal keys without a word: count them in the source.
  source = ast.parse(open(os.path.join(ROOT, "resnet_jax", "training", "config_checks.py")).read())
  literal = next(node.value for node in ast.walk(source) if isinstance(node, ast.AnnAssign)
                 and getattr(node.target, "id", None) == "ON_RESUME")
  written = [k.value for k in literal.keys]
  assert sorted(written) == sorted(set(written)), "a key classified twice"
  # The examples, as the table must have them.
  fixed = {k for k, rule in table.items() if not rule.may_change}
  assert {"batch_size", "seed", "source", "dataset", "train_split", "augment", "image_size",
          "model", "optimizer", "lr_schedule"} <= fixed
  assert {"num_epochs", "num_train_steps", "log_every_steps", "eval_every_steps"}.isdisjoint(fixed)


@pytest.mark.parametrize("key", config_checks.flat_keys(default.get_config()))
def test_a_changed_key_on_resume_is_applied_or_refused_in_one_line(key):
  trained = config_checks.as_json(default.get_config())
  asked = default.get_config()
  *outer, last = key.split(".")
  node = asked
  for part in outer:
    node = node[part]
  old = config_checks.flat_values(trained)[key]
  with node.ignore_type():
    node[last] = _changed(node[last].to_dict() if hasattr(node[last], "to_dict") else node[last])
  new = config_checks.flat_values(asked)[key]
  assert new != old
  if config_checks.ON_RESUME[key].may_change:
    changes = config_checks.resume_changes(trained, asked)
    assert (key, old, new) in changes and all(k == key or config_checks.ON_RESUME[k].may_change
                                               for k, _, _ in changes)
    return
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.resume_changes(trained, asked)
  message = str(error.value)
  assert "\n" not in message
  if key != "learning_rate":  # A reference to base_learning_rate and batch_size; set directly here.
    assert message.startswith(f"config.{key}: this run was trained with {old!r}; you asked for "
                              f"{new!r} (")


@pytest.mark.parametrize("key", sorted(config_checks.ADDED_KEYS))
def test_a_run_saved_before_a_key_existed_resumes_as_it_behaved(key):
  """A saved config without `key` compares as `ADDED_KEYS[key]`, the behaviour before the key: the
  same value resumes with no change recorded, another is treated as any change of the key."""
  trained = {k: v for k, v in config_checks.as_json(default.get_config()).items() if k != key}
  asked = default.get_config()
  asked[key] = config_checks.ADDED_KEYS[key]
  assert config_checks.resume_changes(trained, asked) == []
  with asked.ignore_type():
    asked[key] = _changed(config_checks.ADDED_KEYS[key])
  if config_checks.ON_RESUME[key].may_change:
    assert config_checks.resume_changes(trained, asked) == [
        (key, config_checks.ADDED_KEYS[key], asked[key])]
  else:
    with pytest.raises(config_checks.ConfigError, match=rf"^config.{key}: this run was trained with"):
      config_checks.resume_changes(trained, asked)


def test_an_unclassified_key_that_changed_is_refused(monkeypatch):
  trained = config_checks.as_json(default.get_config())
  asked = default.get_config()
  asked.seed = 1
  monkeypatch.delitem(config_checks.ON_RESUME, "seed")
  with pytest.raises(config_checks.ConfigError, match=r"^config.seed: .* no rule in"):
    config_checks.resume_changes(trained, asked)


def test_resume_refuses_a_fixed_change_untouched_and_records_an_allowed_one(tmp_path, tiny_config,
                                                                           digest, capsys):
  """The wiring, end to end: a changed batch size is one line through the CLI's error path and
  leaves the workdir byte for byte; a longer run with another logging cadence resumes, and
  config.json and config_changes.jsonl say what changed at which step."""
  from resnet_jax.training import checkpoints, metrics
  workdir = str(tmp_path / "run")
  train_lib.train_and_evaluate(tiny_config(), workdir)  # 6 steps, checkpoints at 3 and 6.
  before = digest(workdir)
  with pytest.raises(config_checks.ConfigError) as error:
    train_lib.train_and_evaluate(tiny_config(batch_size=8), workdir)
  assert str(error.value).startswith("config.batch_size: this run was trained with 16; you asked "
                                     "for 8 (")
  assert digest(workdir) == before
  train_lib.train_and_evaluate(tiny_config(num_train_steps=8, log_every_steps=2), workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert (saved["num_train_steps"], saved["log_every_steps"]) == (8, 2)
  with open(os.path.join(workdir, "config_changes.jsonl")) as f:
    changes = sorted((json.loads(line) for line in f), key=lambda c: c["key"])
  assert changes == [{"step": 6, "key": "log_every_steps", "old": 1, "new": 2},
                     {"step": 6, "key": "num_train_steps", "old": 6, "new": 8}]
  assert max(metrics.read_metrics(workdir)["train"]) == 8
  with checkpoints.TrainCheckpoints(workdir, keep=None, read_only=True) as ckpts:
    assert ckpts.read(8).meta[checkpoints.CONFIG_KEY]["num_train_steps"] == 8


def test_a_checkpoint_without_a_saved_config_is_compared_with_config_json(tmp_path, caplog):
  """Checkpoints written before configs were saved in them: config.json (a fresh run's) stands in;
  with neither, the resume goes on unchecked, with a warning."""
  trained = default.get_config()
  asked = default.get_config()
  asked.seed = 5
  assert train_lib.resumed_config_changes(asked, {}, str(tmp_path)) == []
  assert "records no config" in caplog.text
  (tmp_path / "config.json").write_text(json.dumps(config_checks.as_json(trained)))
  with pytest.raises(config_checks.ConfigError, match=r"^config.seed: this run was trained with 0; "):
    train_lib.resumed_config_changes(asked, {}, str(tmp_path))
  asked.seed, asked.progress_bar = 0, False
  assert train_lib.resumed_config_changes(asked, {}, str(tmp_path)) == [("progress_bar", True, False)]


def test_a_moved_data_dir_may_change_but_not_to_other_data():
  trained = default.get_config()
  trained.source, trained.data_dir = "folder", "/data/old"
  meta = {"config": config_checks.as_json(trained),
          "data": {"train_examples": 100, "class_names": ["ant", "bee"]}}
  asked = default.get_config()
  asked.source, asked.data_dir = "folder", "/data/moved"
  same = train_lib.Data(range(100), None, 2, (8, 8, 3), ("ant", "bee"))
  assert train_lib.resumed_config_changes(asked, meta, "/nowhere", same) == [
      ("data_dir", "/data/old", "/data/moved")]
  for other in (train_lib.Data(range(99), None, 2, (8, 8, 3), ("ant", "bee")),
                train_lib.Data(range(100), None, 2, (8, 8, 3), ("ant", "wasp"))):
    with pytest.raises(config_checks.ConfigError, match=r"^config.data_dir='/data/moved': the data "
                                                        r"there is not the data this run was trained"):
      train_lib.resumed_config_changes(asked, meta, "/nowhere", other)
