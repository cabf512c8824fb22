"""Smoke test of benchmarks/degradation.py: a few steps of a plain and a residual net, curves and PNG."""

import json

import pytest


@pytest.fixture(scope="module")
def degradation(benchmark):
  return benchmark("degradation")


def test_recipe_changes_only_the_model_and_the_length(degradation):
  from configs import digits
  base, config = digits.get_config(), degradation.recipe("digits", "plain56", epochs=4)
  assert config.model == "plain56"
  for key in ("batch_size", "learning_rate", "weight_decay", "momentum", "augment", "mean", "std",
              "image_size", "model_overrides"):
    assert config[key] == base[key], key
  steps = 4 * 1437 // 64 + 1
  assert config.num_train_steps == steps
  assert tuple(config.lr_boundaries) == (steps // 2, steps * 3 // 4)  # The paper's 32k/48k of 64k.
  with pytest.raises(ValueError, match="unknown dataset"):
    degradation.recipe("mnist", "plain20")


def test_unregistered_depths_are_built_from_the_20_layer_nets(degradation):
  config = degradation.recipe("digits", "plain8")
  assert config.model == "plain20" and tuple(config.model_overrides.stage_sizes) == (1, 1, 1)
  assert degradation.recipe("digits", "resnet32").model == "resnet32"
  with pytest.raises(ValueError, match="6n \\+ 2"):
    degradation.recipe("digits", "resnet10")


def test_curves_average_the_training_batches_between_evaluations(tmp_path, degradation):
  lines = [{"step": s, "split": "train", "accuracy": a} for s, a in
           [(1, 0.5), (2, 0.7), (3, 0.9), (4, 1.0)]]
  lines += [{"step": 2, "split": "eval", "top1": 0.75}, {"step": 4, "split": "eval", "top1": 0.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
  out = degradation.curves(str(tmp_path), steps_per_epoch=2.0)
  assert out["epoch"] == [1.0, 2.0]
  assert out["train_error"] == pytest.approx([40.0, 5.0])
  assert out["test_error"] == pytest.approx([25.0, 50.0])


def test_script_trains_plots_and_summarises(tmp_path, capsys, degradation):
  out = tmp_path / "degradation.png"
  # Depth 8 (one block per stage): the 20-layer nets take a minute to compile on 2 cores.
  code = degradation.main(["--models", "plain8,resnet8", "--train-steps", "3",
                           "--batch-size", "16", "--image-size", "8", "--evals-per-epoch", "60",
                           "--workdir", str(tmp_path / "runs"), "--out", str(out)])
  assert code == 0
  assert out.stat().st_size > 10_000
  printed = capsys.readouterr().out
  assert "resnet8 trained" not in printed  # One depth per family: no comparison to make.
  results = json.loads((tmp_path / "runs" / "digits_curves.json").read_text())
  for model in ("plain8", "resnet8"):
    # 1437 / 16 / 60 rounds to 1: an evaluation after every step.
    assert len(results[model]["test_error"]) == 3
    assert all(0 <= e <= 100 for e in results[model]["train_error"])
    assert f"{model:10s} final training error" in printed
