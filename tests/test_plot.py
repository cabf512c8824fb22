"""Tests of resnet_jax.training.plot's reading of metrics.jsonl: a torn last line (a run killed mid-write) is
skipped with a warning naming it; any other bad line is an error naming the file and line."""

import json
import logging

import pytest

from resnet_jax import cli
from resnet_jax.training import metrics, plot

RECORDS = [{"step": 1, "split": "train", "loss": 2.0}, {"step": 2, "split": "train", "loss": 1.5}]


def _write(workdir, text):
  (workdir / "metrics.jsonl").write_text(text)
  return str(workdir / "metrics.jsonl")


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
  lines = [json.dumps(r) for r in RECORDS]
  path = _write(tmp_path, "\n".join(lines) + "\n" + lines[1][:17])
  with caplog.at_level(logging.WARNING, logger="resnet_jax.training.metrics"):
    records = metrics.read_metrics(str(tmp_path))
  assert records == {"train": {1: RECORDS[0], 2: RECORDS[1]}}
  assert f"{path}:3: skipping the torn last line" in caplog.text


def test_a_bad_line_inside_the_file_names_file_and_line(tmp_path, capsys):
  lines = [json.dumps(r) for r in RECORDS]
  path = _write(tmp_path, lines[0] + "\n" + lines[1][:17] + "\n" + lines[1] + "\n")
  with pytest.raises(ValueError, match=f"{path}:2: not a metrics record"):
    metrics.read_metrics(str(tmp_path))
  assert cli.main(["plot", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("resnet-jax plot: error: ") and f"{path}:2:" in err and "\n" not in err


def test_a_resumed_run_does_not_glue_its_records_onto_a_torn_line(tmp_path):
  lines = [json.dumps(r) for r in RECORDS]
  _write(tmp_path, lines[0] + "\n" + lines[1][:17])
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(2, "train", {"loss": 1.5})
  writer.close()
  assert metrics.read_metrics(str(tmp_path)) == {"train": {1: RECORDS[0], 2: RECORDS[1]}}


def test_plot_draws_error_on_either_scale_and_prints_the_path(tmp_path, capsys):
  lines = RECORDS + [{"step": 2, "split": "train", "loss": 1.0, "accuracy": 1.0, "learning_rate": 0.1},
                     {"step": 2, "split": "eval", "loss": 1.2, "top1": 0.9, "top5": 1.0, "count": 8}]
  _write(tmp_path, "".join(json.dumps(r) + "\n" for r in lines))
  for scale, name in (("log", "curves.png"), ("linear", "linear.png")):
    argv = ["plot", str(tmp_path), "--error-scale", scale]
    if name != "curves.png":
      argv += ["--out", str(tmp_path / name)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / name}"
    assert (tmp_path / name).stat().st_size > 10_000
