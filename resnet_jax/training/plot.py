"""Training curves: loss, accuracy and learning rate from WORKDIR/metrics.jsonl to a PNG."""

from __future__ import annotations

import json
import os
from typing import Optional

from resnet_jax.training import metrics



def _series(records: dict[int, dict], key: str, to_error: bool = False):
  steps = sorted(s for s, r in records.items() if key in r)
  values = [records[s][key] for s in steps]
  if to_error:  # accuracy fraction -> error in %
    values = [100.0 * (1.0 - v) for v in values]
  return steps, values


def _title(workdir: str) -> str:
  """'resnet20 on digits: <workdir name>' from the config.json a run writes beside its metrics;
  the workdir's name alone when there is none."""
  name = os.path.basename(os.path.abspath(workdir))
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return name
  with open(path) as f:
    config = json.load(f)
  data = config.get("dataset") if config.get("source") == "tfds" else config.get("source")
  return f"{config.get('model')} on {data}: {name}"


# Error below this (in %) is drawn at it: a log axis has no 0, and an interval with no training
# mistakes is common at the end of a run.
ERROR_FLOOR = 0.01


def plot_workdir(workdir: str, out: Optional[str] = None, error_scale: str = "log") -> str:
  """Draws loss (train and eval), top-1/top-5 error (train and eval, in %) and learning rate.

  Args:
    workdir: a training workdir.
    out: the PNG to write; default WORKDIR/curves.png.
    error_scale: 'log' (the paper's figures: the last percent stays readable) or 'linear'.

  Returns:
    The path of the PNG.
  """
  import matplotlib
  matplotlib.use("Agg")  # No display needed.
  import matplotlib.pyplot as plt

  if error_scale not in ("log", "linear"):
    raise ValueError(f"error_scale must be 'log' or 'linear', got {error_scale!r}")
  records = metrics.read_metrics(workdir)
  train, evaluation = records.get("train", {}), records.get("eval", {})
  fig, (loss_ax, err_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4.6))
  loss_ax.plot(*_series(train, "loss"), label="train (interval mean)")
  loss_ax.plot(*_series(evaluation, "loss"), "o-", label="eval")
  loss_ax.set(title="loss", xlabel="step", ylabel="cross-entropy", yscale="log")
  floor = ERROR_FLOOR if error_scale == "log" else 0.0
  for records_, key, style, label in ((train, "accuracy", "-", "train top-1 (interval mean)"),
                                      (evaluation, "top1", "o-", "eval top-1"),
                                      (evaluation, "top5", "s--", "eval top-5")):
    steps, errors = _series(records_, key, to_error=True)
    err_ax.plot(steps, [max(e, floor) for e in errors], style, label=label)
  err_ax.set(title="error", xlabel="step", yscale=error_scale,
             ylabel=f"error (%; 0 drawn at {ERROR_FLOOR})" if floor else "error (%)")
  if error_scale == "linear":
    err_ax.set_ylim(bottom=0)
  lr_ax.plot(*_series(train, "learning_rate"))
  lr_ax.set(title="learning rate", xlabel="step", ylabel="learning rate")
  for ax in (loss_ax, err_ax):
    # Below the axes: a legend inside would cover the curves' ends, where the results are.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8, frameon=False)
  for ax in (loss_ax, err_ax, lr_ax):
    ax.grid(alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
  fig.suptitle(_title(workdir))
  fig.tight_layout()
  out = out or os.path.join(workdir, "curves.png")
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out
