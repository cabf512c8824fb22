"""Throughput benchmark: ResNet-50 on synthetic 224x224 images (no data, no augmentation cost).

The progress bar and WORKDIR/metrics.jsonl report images/s; nothing is checkpointed or evaluated
until the end. Compare `--config.parallelism=jit` (default) and `pmap`:

  python train.py --config configs/synthetic_benchmark.py --workdir /tmp/resnet_benchmark
"""

import ml_collections

from resnet_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "resnet50"
  config.source = "synthetic"
  config.num_classes = 1000
  config.synthetic_examples = 12_800  # The training stream repeats it; the final evaluation reads it once.
  config.augment = "none"
  config.eval_crop_fraction = 1.0
  config.num_train_steps = 200
  config.log_every_steps = 20
  config.eval_every_steps = 1_000_000  # Only the final evaluation.
  config.checkpoint_every_steps = 1_000_000  # Only the final checkpoint.
  config.keep_checkpoints = 1
  return config
