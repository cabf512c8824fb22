"""Tests of resnet_jax.training.metrics and the loop's use of it: interval means, throughput, evaluation steps,
each (split, step) written once, and TensorBoard events read back with TensorBoard's own reader."""

import json
import os
import re

import pytest

from resnet_jax.training import logs, metrics, steps, train_lib


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_interval_means_by_hand():
  history = [{"loss": 2.0, "accuracy": 0.25, "learning_rate": 0.1},
             {"loss": 1.0, "accuracy": 0.5, "learning_rate": 0.1},
             {"loss": 0.5, "accuracy": 1.0, "learning_rate": 0.01}]
  means = metrics.interval_means(history)
  assert means["loss"] == pytest.approx((2.0 + 1.0 + 0.5) / 3)
  assert means["accuracy"] == pytest.approx((0.25 + 0.5 + 1.0) / 3)
  assert means["learning_rate"] == 0.01  # the schedule's value at the interval's last step


def test_eval_steps_evaluate_the_end_once():
  # Digits: 1437 images at batch 64 are 22.45 steps per epoch; 2 epochs end at step 45 = ceil(44.9).
  assert train_lib.eval_steps(0, 1437 / 64, 45) == {23, 45}
  assert train_lib.eval_steps(10, 1437 / 64, 25) == {10, 20, 25}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config):
  """The same 6 steps logged every step (a) and every 3 steps (b, with the progress display on)."""
  base = tmp_path_factory.mktemp("metrics")
  train_lib.train_and_evaluate(tiny_config(log_every_steps=1), str(base / "every_step"))
  return base


def test_train_metrics_are_means_over_the_interval(runs, capsys, tiny_config):
  workdir = str(runs / "every_third")
  with logs.to_stderr():
    train_lib.train_and_evaluate(tiny_config(log_every_steps=3, progress_bar=True), workdir)
  err = capsys.readouterr().err
  every = {r["step"]: r for r in _records(runs / "every_step") if r["split"] == "train"}
  third = {r["step"]: r for r in _records(workdir) if r["split"] == "train"}
  assert sorted(third) == [3, 6]
  for step in (3, 6):
    steps = range(step - 2, step + 1)
    for key in ("loss", "accuracy"):
      # The same computation in both runs: float32 rounding apart, far below a step's change.
      assert third[step][key] == pytest.approx(sum(every[s][key] for s in steps) / 3, rel=1e-4)
    assert third[step]["learning_rate"] == pytest.approx(every[step]["learning_rate"])
  # Throughput leaves out the first, compiling step: nothing timed in step 1 alone.
  assert "images_per_sec" not in every[1] and every[2]["images_per_sec"] > 0
  assert third[3]["images_per_sec"] > 0
  # Not a terminal: plain periodic lines in the package's one format, no bar redrawn with \r.
  assert "\r" not in err
  lines = [line for line in err.splitlines() if " step " in line]
  assert len(lines) == 3, err  # steps 3 and 6, and the evaluation at 6
  assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO step \d", line) for line in lines), err


def test_each_split_and_step_is_written_once(runs, tiny_config):
  workdir = str(runs / "every_step")
  records = _records(workdir)
  keys = [(r["split"], r["step"]) for r in records]
  assert len(keys) == len(set(keys)) and ("eval", 6) in keys
  # A finished run, resumed, writes nothing: no line, no events file.
  before = (open(os.path.join(workdir, "metrics.jsonl")).read(),
            sorted(os.listdir(os.path.join(workdir, "tensorboard", "every_step"))))
  result = train_lib.train_and_evaluate(tiny_config(log_every_steps=1), workdir)
  assert result["count"] == 360
  assert before == (open(os.path.join(workdir, "metrics.jsonl")).read(),
                    sorted(os.listdir(os.path.join(workdir, "tensorboard", "every_step"))))


def test_a_resumed_run_drops_what_it_writes_again(tmp_path):
  """A crashed run wrote steps 1-4 (and half a line), its last checkpoint is step 2: on resume the
  lines after step 2 are dropped and TensorBoard discards its events after step 2, so both
  readers see the steps 3-4 of the resumed run only."""
  from tensorboard.backend.event_processing import event_accumulator
  crashed = metrics.MetricWriter(str(tmp_path))
  crashed.start(0)
  for step in (1, 2, 3, 4):
    crashed.write(step, "train", {"loss": 1.0})
  crashed.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "spl')
  resumed = metrics.MetricWriter(str(tmp_path))
  resumed.start(2)
  for step in (3, 4):
    resumed.write(step, "train", {"loss": 0.5})
  resumed.close()
  expected = [(1, 1.0), (2, 1.0), (3, 0.5), (4, 0.5)]
  assert [(r["step"], r["loss"]) for r in _records(tmp_path)] == expected
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard" / tmp_path.name))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == expected


def test_tensorboard_has_the_config_and_only_metrics_as_scalars(runs, tiny_config):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import plugin_data_pb2
  run_dir = runs / "every_step" / "tensorboard" / "every_step"  # the run is named after the workdir
  acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={
      event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
  acc.Reload()
  scalars = set(acc.Tags()["scalars"])
  assert {"train/loss", "train/accuracy", "train/learning_rate", "eval/loss", "eval/top1",
          "eval/top5"} <= scalars
  assert "eval/count" not in scalars
  assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
  assert [e.step for e in acc.Scalars("eval/top1")] == [6]
  config = tiny_config(log_every_steps=1)
  text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
  assert "model: resnet20" in text and f"batch_size: {config.batch_size}" in text
  start = plugin_data_pb2.HParamsPluginData.FromString(
      acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
  assert start.hparams["model"].string_value == "resnet20"
  assert start.hparams["batch_size"].number_value == config.batch_size
  assert start.hparams["learning_rate"].number_value == pytest.approx(config.learning_rate)
