"""Training metrics: interval means, throughput, metrics.jsonl (written and read back) and TensorBoard."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

# Values of the schedule at a step rather than measurements of it: reported as of the interval's
# last step, not averaged.
LAST_VALUE_KEYS = ("learning_rate",)
# Bookkeeping that goes to metrics.jsonl but is not a curve worth drawing in TensorBoard.
NOT_SCALARS = ("count",)

log = logging.getLogger(__name__)


def interval_means(history: list[dict]) -> dict:
  """The mean of each metric over the steps of one logging interval (CLU's reduction: the step
  returns per-step values, the loop averages them).

  Every training step sees a global batch of the same size, so the mean of the per-step means is
  the mean over all the interval's examples. Keys in `LAST_VALUE_KEYS` keep the last step's value.
  """
  if not history:
    raise ValueError("no steps to average")
  means = {k: sum(h[k] for h in history) / len(history) for k in history[0]}
  means.update({k: history[-1][k] for k in LAST_VALUE_KEYS if k in history[-1]})
  return means


class Throughput:
  """Images per second over the steps since the last `restart`, excluding compilation.

  The loop calls `restart` once the run's first step has finished (that step compiles) and after
  each evaluation or checkpoint, so neither counts as training time.
  """

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self._since: Optional[float] = None
    self._steps = 0

  def restart(self) -> None:
    self._since, self._steps = time.perf_counter(), 0

  def step(self) -> None:
    if self._since is not None:
      self._steps += 1

  def images_per_sec(self) -> Optional[float]:
    """None when no timed step has run since the last restart (e.g. only the compiling one)."""
    if self._since is None or not self._steps:
      return None
    return self._steps * self.batch_size / (time.perf_counter() - self._since)


def describe_evaluation(result: dict) -> str:
  """'loss 0.0223, top-1 error 0.83%, top-5 error 0.00% (360 examples)': errors in %, as the paper and
  `resnet-jax evaluate` report them (metrics.jsonl and TensorBoard keep top1/top5 as accuracy
  fractions)."""
  from resnet_jax.data.protocols import format_errors
  errors = {1: 100.0 * (1.0 - result["top1"]), 5: 100.0 * (1.0 - result["top5"])}
  return f"loss {result['loss']:.4f}, {format_errors(errors)} ({result['count']} examples)"


def _flat_config(config) -> dict:
  """{'dotted.key': value} with values TensorBoard's hparams accept (numbers, strings, bools)."""
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, dict):
        visit(name + ".", value)
      elif isinstance(value, (bool, int, float, str)):
        flat[name] = value
      else:
        flat[name] = str(value)  # tuples (lr_boundaries, mean, ...) as their text
  visit("", config.to_dict() if hasattr(config, "to_dict") else dict(config))
  return flat


class MetricWriter:
  """Writes {'step', 'split', ...} lines to WORKDIR/metrics.jsonl, TensorBoard events to
  WORKDIR/tensorboard/<workdir's name> and a fresh run's config to WORKDIR/config.json; only
  process 0 writes.

  Each (split, step) is written once: `start(step, config)` (called by the loop before training,
  with the step it resumes from) drops the records that a crashed run wrote after its last
  checkpoint, which the resumed run writes again, and tells TensorBoard to discard its events
  after that step (a SessionLog START at `step + 1`). Nothing is opened before the first write, so
  a resumed run that is already finished writes no new file.
  """

  def __init__(self, workdir: str):
    import jax
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self.run_name = os.path.basename(os.path.abspath(workdir))
    self._start: Optional[int] = None
    self._config, self._changes = None, []
    self._jsonl = self._tb = None

  def start(self, step: int, config=None, changes=()) -> None:
    """Records where this run starts; the config is logged (text and hparams) by a fresh run, and
    by a resumed one whose config `changes` ((key, old, new) of keys that may change on resume):
    config.json then holds the new config, and config_changes.jsonl what changed at which step."""
    self._start, self._config, self._changes = step, config, list(changes)

  @property
  def path(self) -> str:
    return os.path.join(self.workdir, "metrics.jsonl")

  def _open(self) -> None:
    from tensorboardX import SummaryWriter
    start = self._start or 0
    if os.path.exists(self.path):  # also a run killed before its first checkpoint (start 0)
      self._drop_records_after(self._start)
    self._jsonl = open(self.path, "a")
    # The suffix keeps two runs started within one second from sharing (overwriting) a file name.
    self._tb = SummaryWriter(os.path.join(self.workdir, "tensorboard", self.run_name),
                             purge_step=start + 1, filename_suffix=f".{time.time_ns()}")
    if not start and self._config is not None:
      self._log_config(self._config)
    elif self._changes and self._config is not None:
      self._write_config_json(self._config)
      with open(os.path.join(self.workdir, "config_changes.jsonl"), "a") as f:
        for key, old, new in self._changes:
          f.write(json.dumps({"step": int(start), "key": key, "old": old, "new": new}) + "\n")

  def _drop_records_after(self, step: Optional[int]) -> None:
    """Keeps the records up to `step` (None: all), and drops a line cut short by a crash."""
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          record_step = json.loads(line)["step"]
        except ValueError:  # a line cut short by a crash is not a record
          continue
        if step is None or record_step <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def _log_config(self, config) -> None:
    from tensorboardX.summary import hparams
    self._write_config_json(config)
    # Indented four spaces: TensorBoard's text plugin renders markdown, this as a code block.
    self._tb.add_text("config", "\n".join("    " + line for line in str(config).splitlines()), 0)
    flat = _flat_config(config)
    # The hparams dashboard lists runs by these values beside the final eval metrics.
    metrics = {f"eval/{k}": None for k in ("top1", "top5", "loss")}
    for summary in hparams(flat, metrics):
      self._tb.file_writer.add_summary(summary)

  def _write_config_json(self, config) -> None:
    path = os.path.join(self.workdir, "config.json")  # for plots, scripts and resumed runs
    with open(path + ".tmp", "w") as f:
      json.dump(json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config), f,
                indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)

  def write(self, step: int, split: str, scalars: dict) -> None:
    if not self.enabled:
      return
    if self._jsonl is None:
      self._open()
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
    self._jsonl.flush()
    for key, value in scalars.items():
      if key not in NOT_SCALARS:
        self._tb.add_scalar(f"{split}/{key}", value, step)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()
      self._jsonl = self._tb = None


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
