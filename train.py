"""Trains a ResNet: `python train.py --config configs/digits.py --workdir runs/digits`.

Any config key can be overridden, e.g. `--config.batch_size=128 --config.parallelism=pmap`; an
unknown key is an error. Restarting with the same workdir resumes from its latest checkpoint.
This file is kept short: the logic is in resnet_jax/train_lib.py, where it can be tested.
"""

import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# The configs import each other as `configs.<name>`, wherever train.py is started from.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from resnet_jax import logs, train_lib  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics; resumed if it has some.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Our own progress messages; Orbax's and JAX's INFO logs would bury the progress bar.
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    with logs.to_stderr():  # the package's one format, as `resnet-jax` prints it
      result = train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train_lib.USER_ERRORS as e:  # A bad config or workdir: one line, no traceback.
    sys.exit(f"error: {e}")
  print(f"final: eval loss {result['loss']:.4f}  top-1 {result['top1']:.4f}  "
        f"top-5 {result['top5']:.4f}  over {result['count']} examples")


if __name__ == "__main__":
  app.run(main)
