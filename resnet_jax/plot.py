"""Training curves: loss, accuracy and learning rate from WORKDIR/metrics.jsonl to a PNG."""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

log = logging.getLogger(__name__)


def read_metrics(workdir: str) -> dict[str, dict[int, dict]]:
  """{split: {step: record}} from the workdir's metrics.jsonl; for a step written twice (a run
  resumed from a checkpoint repeats the steps after it) the later record wins.

  Raises:
    ValueError: naming the file and line of a line that is not a record. A torn last line (no
      newline: a run killed mid-write) is skipped with a warning instead.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
  records: dict[str, dict[int, dict]] = {}
  with open(path) as f:
    lines = f.read().split("\n")
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      records.setdefault(record["split"], {})[record["step"]] = record
    except (ValueError, KeyError, TypeError) as e:
      if number == len(lines):  # No newline after it: a record torn by a kill mid-write.
        log.warning("%s:%d: skipping the torn last line (a run killed while writing it)", path, number)
        continue
      raise ValueError(f"{path}:{number}: not a metrics record ({type(e).__name__}: {e})") from None
  return records


def _series(records: dict[int, dict], key: str):
  steps = sorted(s for s, r in records.items() if key in r)
  return steps, [records[s][key] for s in steps]


def plot_workdir(workdir: str, out: Optional[str] = None) -> str:
  """Draws loss (train and eval), accuracy (train top-1, eval top-1/top-5) and learning rate.

  Args:
    workdir: a training workdir.
    out: the PNG to write; default WORKDIR/curves.png.

  Returns:
    The path of the PNG.
  """
  import matplotlib
  matplotlib.use("Agg")  # No display needed.
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  train, evaluation = records.get("train", {}), records.get("eval", {})
  fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4))
  loss_ax.plot(*_series(train, "loss"), label="train")
  loss_ax.plot(*_series(evaluation, "loss"), "o-", label="eval")
  loss_ax.set(title="loss", xlabel="step", yscale="log")
  acc_ax.plot(*_series(train, "accuracy"), label="train top-1")
  acc_ax.plot(*_series(evaluation, "top1"), "o-", label="eval top-1")
  acc_ax.plot(*_series(evaluation, "top5"), "s--", label="eval top-5")
  acc_ax.set(title="accuracy", xlabel="step", ylim=(0, 1))
  lr_ax.plot(*_series(train, "learning_rate"))
  lr_ax.set(title="learning rate", xlabel="step")
  for ax in (loss_ax, acc_ax):
    ax.legend()
  for ax in (loss_ax, acc_ax, lr_ax):
    ax.grid(alpha=0.3)
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  out = out or os.path.join(workdir, "curves.png")
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out
