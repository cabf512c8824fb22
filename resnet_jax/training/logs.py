"""One log format for the package, and progress that is a bar on a terminal and periodic lines elsewhere."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Optional, TextIO

FORMAT = "%(asctime)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
log = logging.getLogger("resnet_jax")


@contextlib.contextmanager
def to_stderr(level: int = logging.INFO) -> Iterator[None]:
  """Prints the package's log records on stderr, in `FORMAT`, while the block runs.

  Used by `resnet-jax` and train.py. The package logger stops propagating meanwhile: absl (which
  train.py runs under) and other libraries put their own handler on the root logger, and a record
  would otherwise be printed twice in two formats.
  """
  if any(getattr(h, "resnet_jax", False) for h in log.handlers):  # nested: `resnet-jax train`
    yield
    return
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
  handler.resnet_jax = True
  previous = log.level, log.propagate
  log.addHandler(handler)
  log.setLevel(level)
  log.propagate = False
  try:
    yield
  finally:
    log.removeHandler(handler)
    log.setLevel(previous[0])
    log.propagate = previous[1]


class Progress:
  """Training progress: a tqdm bar when `stream` is a terminal, otherwise one log line per `show`
  (so a log file gets plain periodic lines, not a bar redrawn with carriage returns).

  Args:
    total: the last step.
    initial: the step training resumes from.
    enabled: False shows nothing (other processes than the first, or `config.progress_bar`).
    stream: where the bar is drawn; stderr, like the log.
  """

  def __init__(self, total: int, initial: int = 0, enabled: bool = True,
               stream: Optional[TextIO] = None):
    self.total, self.enabled = total, enabled
    stream = stream or sys.stderr
    self._bar = None
    if enabled and stream.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                       file=stream)

  def update(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def show(self, step: int, fields: dict) -> None:
    """The latest interval's figures: on the bar, or as one line."""
    if self._bar is not None:
      self._bar.set_postfix(fields)
    elif self.enabled:
      log.info("step %d/%d: %s", step, self.total, "  ".join(f"{k} {v}" for k, v in fields.items()))

  def write(self, message: str) -> None:
    """A message (e.g. an evaluation) above the bar, or a log line."""
    if self._bar is not None:
      self._bar.write(message, file=self._bar.fp)
    else:
      log.info("%s", message)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
