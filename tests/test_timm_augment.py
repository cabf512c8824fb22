"""timm's RandAugment ('rand-m7-mstd0.5-inc1') against timm's own, op by op and as a whole, on a photo."""

import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import autoaugment, timm_augment

FILL = (124, 116, 104)  # timm: round(255 * ImageNet's mean)
LEVELS = (0.0, 3.3, 7.0, 10.0)


@pytest.fixture(scope="module")
def timm_aa(torch):
  from timm.data import auto_augment
  return auto_augment


@pytest.fixture(scope="module")
def photo():
  from skimage import data
  return data.chelsea()[::2, ::2].copy()  # 150 x 226: both axes, odd and even


@pytest.mark.parametrize("name", sorted(set(timm_augment.TRANSFORMS) | set(timm_augment.INCREASING)))
def test_each_op_equals_timms(timm_aa, photo, monkeypatch, name):
  img = Image.fromarray(photo)
  hparams = dict(translate_const=int(min(photo.shape[:2]) * 0.45), img_mean=FILL)
  for level in LEVELS:
    for negate in ((False, True) if name in timm_augment.SIGNED else (False,)):
      monkeypatch.setattr(timm_aa, "_randomly_negate", lambda v: -v if negate else v)
      args = timm_aa.LEVEL_TO_ARG[name](level, hparams) if timm_aa.LEVEL_TO_ARG[name] else ()
      for resample in (Image.BILINEAR, Image.BICUBIC):
        arg = timm_augment.level_argument(name, level, negate, *img.size)
        ours = timm_augment.apply_op(img, name, arg, FILL, resample)
        try:
          theirs = timm_aa.NAME_TO_OP[name](img, *args, fillcolor=FILL, resample=resample)
        except ValueError:  # posterize to 0 bits: PIL >= 9 refuses it; we keep no bit, as PIL did
          assert name.startswith("Posterize") and args == (0,)
          theirs = np.zeros_like(photo)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs),
                                      err_msg=f"{name} level {level} negate {negate}")
        if name not in timm_augment.GEOMETRIC:
          break


class _Recorder:
  """A numpy Generator that logs every draw, for timm's `random`/`np.random` to replay."""

  def __init__(self, seed):
    self.rng, self.log = np.random.default_rng(seed), []

  def _keep(self, value):
    self.log.append(value)
    return value

  def integers(self, low, high, size=None):
    return self._keep(self.rng.integers(low, high, size=size))

  def random(self):
    return self._keep(self.rng.random())

  def normal(self, mean, std):
    return self._keep(self.rng.normal(mean, std))

  def uniform(self, low, high):
    return self._keep(self.rng.uniform(low, high))


class _Replay:
  """timm's draws (python `random` and `np.random.choice`) served from a `_Recorder`'s log."""

  def __init__(self, log):
    self.log = list(log)

  def _next(self):
    return self.log.pop(0)

  def choice(self, seq, size=None, replace=True, p=None):
    value = self._next()
    if size is None:  # random.choice of the filter
      return seq[int(value)]
    return [seq[int(i)] for i in value]

  def random(self):
    return float(self._next())

  def gauss(self, mean, std):
    return float(self._next())

  def uniform(self, low, high):
    return float(self._next())


@pytest.mark.parametrize("policy", ["rand-m7-mstd0.5-inc1", "rand-m6-mstd0.5-inc1", "rand-m9-n3-mstd0.5",
                                    "rand-m7-mstd101-inc1", "rand-m9-p1.0-inc1"])
@pytest.mark.parametrize("interpolation", ["random", "bicubic"])
def test_the_policy_equals_timms_draw_for_draw(timm_aa, photo, monkeypatch, policy, interpolation):
  """Our draws, replayed into timm's `random` and `np.random.choice`, give timm's image: the
  operations, the probability, the magnitude noise, the sign and the filter are all used as timm
  uses them."""
  hparams = dict(translate_const=int(min(photo.shape[:2]) * 0.45), img_mean=FILL)
  if interpolation != "random":
    hparams["interpolation"] = Image.BICUBIC
  theirs_transform = timm_aa.rand_augment_transform(policy, hparams)
  config = timm_augment.parse(policy)
  changed = 0
  for seed in range(12):
    recorder = _Recorder(seed)
    ours = timm_augment.rand_augment(photo, recorder, config, fill=FILL, interpolation=interpolation)
    replay = _Replay(recorder.log)
    monkeypatch.setattr(timm_aa, "random", replay)
    monkeypatch.setattr(timm_aa.np.random, "choice", replay.choice)
    theirs = np.asarray(theirs_transform(Image.fromarray(photo)))
    monkeypatch.undo()
    assert not replay.log, "timm drew fewer values than we did"
    np.testing.assert_array_equal(ours, theirs, err_msg=f"seed {seed}")
    changed += not np.array_equal(ours, photo)
  assert changed >= 6  # the policy really ran


def test_parse_and_refuse():
  c = timm_augment.parse("rand-m7-mstd0.5-inc1")
  assert (c.magnitude, c.magnitude_std, c.increasing, c.num_layers, c.prob) == (7, 0.5, True, 2, 0.5)
  assert timm_augment.parse("rand-m9-mstd101").magnitude_std == float("inf")
  for bad in ("rand-m7-x3", "rand-tweights", "randaug", "rand-m7.5"):
    with pytest.raises(ValueError, match="rand"):
      timm_augment.parse(bad)


def test_train_policy_takes_timms_string_and_fills_with_the_mean(photo):
  policy = autoaugment.train_policy("rand-m10-p1.0-mstd0-inc1", erase_value=(123.675, 116.28, 103.53))
  out = policy(photo, np.random.default_rng(0))
  assert out.shape == photo.shape and out.dtype == np.uint8
  grey = np.zeros((32, 32, 1), np.uint8)
  assert autoaugment.train_policy("rand-m7-mstd0.5-inc1")(grey, np.random.default_rng(1)).shape == grey.shape
