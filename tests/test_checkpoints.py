"""Tests of resnet_jax.training.checkpoints: model variables, training checkpoints, damaged and partial steps."""

import json
import os
import shutil

import numpy as np
import optax
import pytest

from resnet_jax import models
from resnet_jax.training import checkpoints, train_lib
from resnet_jax.data.input_pipeline import DeviceIterator, InMemorySource, train_dataset
from resnet_jax.weights.spec import ModelSpec

SPEC = ModelSpec("resnet20", 10, in_channels=1, model_overrides={"stage_sizes": [1, 1, 1]},
                 image_size=8, resize_size=8, mean_255=(84.0,), std_255=(105.0,))


def _state(value: float) -> dict:
  return {"step": np.int32(value),
          "params": {"conv": {"kernel": np.full((3, 3, 1, 4), value, np.float32)},
                     "fc": {"bias": np.full((10,), value, np.float32)}},
          "batch_stats": {"bn": {"mean": np.full((4,), value, np.float32)}},
          "opt_state": {"0": {"trace": np.full((4,), value, np.float32)}}}


def _iterator() -> DeviceIterator:
  source = InMemorySource(np.zeros((16, 2, 2, 1), np.uint8), np.arange(16) % 4, num_classes=4)
  ds = train_dataset(source, global_batch_size=4, image_size=2, augment="none", seed=0)
  return DeviceIterator(ds, put=lambda b: b, prefetch=1, num_threads=0)


def _position(step: int) -> bytes:
  return f'{{"next_index": {step}}}'.encode()


def _save_steps(workdir, steps, keep=None):
  with checkpoints.TrainCheckpoints(str(workdir), keep=keep) as ckpts:
    for step in steps:
      ckpts.save(step, _state(step), _position(step), checkpoints.training_meta(SPEC))


def test_save_and_load_variables_round_trip(tmp_path):
  variables = {"params": _state(1.0)["params"], "batch_stats": _state(1.0)["batch_stats"]}
  checkpoints.save_variables(str(tmp_path / "m"), variables, SPEC)
  loaded, spec = checkpoints.load_variables(str(tmp_path / "m"))
  np.testing.assert_array_equal(loaded["params"]["conv"]["kernel"], variables["params"]["conv"]["kernel"])
  assert spec == SPEC
  with pytest.raises(FileExistsError):
    checkpoints.save_variables(str(tmp_path / "m"), variables, SPEC)


def test_keep_last_k_and_resume_position(tmp_path):
  _save_steps(tmp_path, [1, 2, 3, 4], keep=2)
  it = _iterator()
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=2) as ckpts:
    assert ckpts.steps() == [3, 4]
    state, meta = ckpts.restore_latest(_state(0), it)
  assert int(state["step"]) == 4 and meta["step"] == 4
  np.testing.assert_array_equal(state["params"]["conv"]["kernel"], _state(4)["params"]["conv"]["kernel"])
  assert it.get_state() == _position(4)


def test_load_variables_reads_a_training_workdir(tmp_path):
  _save_steps(tmp_path, [5, 7])
  variables, spec = checkpoints.load_variables(str(tmp_path))
  assert set(variables) == {"params", "batch_stats"}
  assert spec == SPEC.replace(source={"step": 7})
  assert float(variables["params"]["fc"]["bias"][0]) == 7.0


def _data_files(step_dir):
  return [os.path.join(d, f) for d, _, files in os.walk(os.path.join(step_dir, "state"))
          for f in files if "manifest" not in f and not f.startswith("_")
          and os.path.getsize(os.path.join(d, f)) > 64]


def _damage(step_dir, damage):
  """The damages seen in practice (issue 9), applied to one step directory."""
  if damage in ("garbled_arrays", "truncated_arrays"):
    files = _data_files(step_dir)
    assert files
    for path in files:
      data = bytearray(open(path, "rb").read())
      if damage == "truncated_arrays":
        data = data[:len(data) // 2]
      else:
        data[len(data) // 2:] = os.urandom(len(data) - len(data) // 2)
      open(path, "wb").write(bytes(data))
  elif damage == "missing_state":
    shutil.rmtree(step_dir / "state")
  elif damage == "metadata_deleted":
    os.remove(step_dir / "state" / "_METADATA")
  elif damage == "data_position_edited":  # Another valid position, the file otherwise untouched.
    path = step_dir / "data" / "process_0-of-1.json"
    body = json.loads(path.read_text())
    body["position"] = _position(0).decode()
    path.write_text(json.dumps(body))
  elif damage == "empty_step_dir":
    shutil.rmtree(step_dir)
    step_dir.mkdir()
  else:
    raise AssertionError(damage)


DAMAGES = {"garbled_arrays": "unreadable", "truncated_arrays": "unreadable",
           "missing_state": "unreadable", "metadata_deleted": "unreadable",
           "data_position_edited": "data-checksum", "empty_step_dir": "empty"}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_step_is_set_aside_and_saving_goes_on(tmp_path, damage, digest):
  """Resuming falls back to the newest intact step; the damaged one is moved (byte for byte) to
  checkpoints/damaged/, so that saving its step and later ones works again (Orbax skips any step
  <= the newest directory it sees). The trainer and `load_variables` agree on what is intact."""
  _save_steps(tmp_path, [1, 2, 3])
  _damage(tmp_path / "checkpoints" / "3", damage)
  before = digest(tmp_path)
  # A reader skips the damaged step and changes nothing.
  assert checkpoints.load_variables(str(tmp_path))[1].source["step"] == 2
  assert digest(tmp_path) == before
  it = _iterator()
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None, async_save=False) as ckpts:
    state, meta = ckpts.restore_latest(_state(0), it)
    assert meta["step"] == 2 and float(state["params"]["fc"]["bias"][0]) == 2.0
    assert it.get_state() == _position(2)
    assert ckpts.steps() == [1, 2]
    for step in (3, 4):
      ckpts.save(step, _state(step), _position(step), checkpoints.training_meta(SPEC))
    assert ckpts.steps() == [1, 2, 3, 4]
  aside = f"checkpoints/damaged/3-{DAMAGES[damage]}/"
  moved = {k.replace("checkpoints/3/", aside): v for k, v in before.items()}
  after = digest(tmp_path)
  assert {k: v for k, v in after.items() if k in moved} == moved  # Nothing lost or changed.
  assert os.path.isdir(tmp_path / aside)
  assert checkpoints.load_variables(str(tmp_path))[1].source["step"] == 4


def test_stray_empty_step_directory_never_blocks_saving(tmp_path):
  """A stray empty checkpoints/1000 next to good steps: resume from the newest good one, set the
  stray aside, and every later step is saved (before, nothing up to 1000 ever was)."""
  _save_steps(tmp_path, [1, 2])
  (tmp_path / "checkpoints" / "1000").mkdir()
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None, async_save=False) as ckpts:
    _, meta = ckpts.restore_latest(_state(0), _iterator())
    assert meta["step"] == 2
    ckpts.save(3, _state(3), _position(3), checkpoints.training_meta(SPEC))
    assert ckpts.steps() == [1, 2, 3]
  assert os.listdir(tmp_path / "checkpoints" / "damaged") == ["1000-empty"]


def test_a_save_orbax_would_skip_is_an_error(tmp_path):
  _save_steps(tmp_path, [5])
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    with pytest.raises(checkpoints.CheckpointError, match="step 3 was not saved.*holds step 5"):
      ckpts.save(3, _state(3), _position(3), checkpoints.training_meta(SPEC))


def test_another_model_is_named_and_nothing_moves(tmp_path, digest):
  """A config of another model is a one-line error naming both, not "damage"; even a damaged
  newer step is left where it is."""
  _save_steps(tmp_path, [1, 2, 3])
  _damage(tmp_path / "checkpoints" / "3", "garbled_arrays")
  before = digest(tmp_path)
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    with pytest.raises(checkpoints.WorkdirMismatchError) as error:
      ckpts.restore_latest(_state(0), _iterator(), checkpoints.training_meta(SPEC.replace(arch="resnet32")))
  message = str(error.value)
  assert "trained with resnet20; you asked for resnet32" in message and "\n" not in message
  assert "arch: 'resnet20' -> 'resnet32'" in message and len(message) < 500
  assert digest(tmp_path) == before


def test_another_state_layout_is_named_not_called_damage(tmp_path, digest):
  _save_steps(tmp_path, [1])
  other = _state(0)
  other["opt_state"] = {"0": {"trace": np.zeros((4,), np.float32)}, "1": {"nu": np.zeros(4)}}
  before = digest(tmp_path)
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    with pytest.raises(checkpoints.WorkdirMismatchError, match=r"another layout.*\['opt_state'\]\['1'\]"):
      ckpts.restore_latest(other, _iterator(), checkpoints.training_meta(SPEC))
  assert digest(tmp_path) == before


def test_nothing_intact_is_an_error_and_nothing_moves(tmp_path, digest):
  _save_steps(tmp_path, [1])
  _damage(tmp_path / "checkpoints" / "1", "data_position_edited")
  before = digest(tmp_path)
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    with pytest.raises(checkpoints.CheckpointError, match="none of the 1 checkpoints .* is intact"):
      ckpts.restore_latest(_state(0), _iterator())
  assert digest(tmp_path) == before


def test_partial_write_is_never_picked(tmp_path):
  """What a process killed mid-save leaves: Orbax's temporary directory, never renamed."""
  _save_steps(tmp_path, [1, 2])
  partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(os.urandom(100))
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    assert ckpts.steps() == [1, 2]
    _, meta = ckpts.restore_latest(_state(0), _iterator())
  assert meta["step"] == 2


def test_no_checkpoint(tmp_path):
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    assert ckpts.restore_latest(_state(0), _iterator()) is None
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    checkpoints.load_variables(str(tmp_path))


def test_init_from_converted_model_replaces_the_head(tmp_path):
  """Fine-tuning a converted checkpoint on a dataset with another number of classes."""
  tiny = dict(stage_sizes=(1, 1, 1), in_channels=1)
  source = models.get_model("resnet20", num_classes=10, **tiny)
  src_state = train_lib.initial_state(source, optax.sgd(0.1), (8, 8, 1), seed=1)
  checkpoints.save_variables(str(tmp_path / "converted"),
                             {"params": src_state.params, "batch_stats": src_state.batch_stats},
                             SPEC)
  target = models.get_model("resnet20", num_classes=5, **tiny)
  fresh = train_lib.initial_state(target, optax.sgd(0.1), (8, 8, 1), seed=2)
  loaded = train_lib.load_pretrained(fresh, str(tmp_path / "converted"))
  np.testing.assert_array_equal(loaded.params["conv1"]["kernel"], src_state.params["conv1"]["kernel"])
  np.testing.assert_array_equal(loaded.params["fc"]["kernel"], fresh.params["fc"]["kernel"])
  assert loaded.params["fc"]["kernel"].shape == (64, 5)

  wider = models.get_model("resnet20", num_classes=10, stage_widths=(8, 32, 64), **tiny)
  other = train_lib.initial_state(wider, optax.sgd(0.1), (8, 8, 1), seed=0)
  with pytest.raises(ValueError, match="has shape .* the model expects"):
    train_lib.load_pretrained(other, str(tmp_path / "converted"))


def test_disk_full_during_a_save_keeps_every_earlier_step(tmp_path, monkeypatch, digest):
  """A write that fails (here: ENOSPC at the final rename of step 3) leaves only Orbax's temporary
  directory; the earlier steps are intact, and once there is room the step saves normally."""
  import errno

  from orbax.checkpoint._src.path import atomicity
  _save_steps(tmp_path, [1, 2])
  before = digest(tmp_path)
  original = atomicity.AtomicRenameTemporaryPath.finalize

  async def full(self, *args, **kwargs):
    if self._final_path.name == "3":
      raise OSError(errno.ENOSPC, "No space left on device")
    return await original(self, *args, **kwargs)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full)
  ckpts = checkpoints.TrainCheckpoints(str(tmp_path), keep=None)  # Asynchronous, as training's.
  # One OSError naming the directory, which train.py prints as one line.
  with pytest.raises(OSError, match=r"writing a checkpoint in .*checkpoints failed \(No space left"):
    ckpts.save(3, _state(3), _position(3), checkpoints.training_meta(SPEC))
    ckpts.close()  # Waits for the save, whose error surfaces here.
  ckpts = checkpoints.TrainCheckpoints(str(tmp_path), keep=None)  # The next run, in the same workdir.
  assert ckpts.steps() == [1, 2]
  assert {k: v for k, v in digest(tmp_path).items() if k in before} == before
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", original)
  ckpts.save(3, _state(3), _position(3), checkpoints.training_meta(SPEC))
  ckpts.close()
  assert checkpoints.load_variables(str(tmp_path))[1].source["step"] == 3


def test_another_process_count_is_named_not_called_damage(tmp_path, digest):
  """A checkpoint of a two-process run (each process's position sealed), resumed by one process."""
  _save_steps(tmp_path, [1])
  data = tmp_path / "checkpoints" / "1" / "data"
  sealed = (data / "process_0-of-1.json").read_text()
  (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
  (data / "process_1-of-2.json").write_text(sealed)
  before = digest(tmp_path)
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    with pytest.raises(checkpoints.WorkdirMismatchError, match=r"written by 2 process\(es\); this run has 1"):
      ckpts.restore_latest(_state(0), _iterator())
  assert digest(tmp_path) == before


def test_a_checkpoint_from_before_sealed_positions_still_resumes(tmp_path):
  """Version 1 (no 'checkpoint_version'): the position file holds the bare position, unchecked."""
  _save_steps(tmp_path, [1])
  step = tmp_path / "checkpoints" / "1"
  meta = json.loads((step / "meta" / "metadata").read_text())
  del meta["checkpoint_version"]
  (step / "meta" / "metadata").write_text(json.dumps(meta))
  (step / "data" / "process_0-of-1.json").write_text(_position(1).decode())
  it = _iterator()
  with checkpoints.TrainCheckpoints(str(tmp_path), keep=None) as ckpts:
    _, restored = ckpts.restore_latest(_state(0), it)
  assert restored["step"] == 1 and it.get_state() == _position(1)


def test_a_spec_and_the_first_metadata_compare_field_by_field():
  """Workdirs written before training recorded a ModelSpec resume under one that does (and the
  other way round) when they describe the same model; a difference is named."""
  from resnet_jax.weights import spec
  legacy = {"arch": "resnet20", "num_classes": 10, "image_size": 16, "mean": [84.0], "std": [105.0],
            "model_overrides": {"in_channels": 1, "stage_sizes": [1, 1, 1]}}
  described = {"spec": spec.ModelSpec(
      "resnet20", 10, in_channels=1, model_overrides={"stage_sizes": (1, 1, 1)}, image_size=16,
      resize_size=16, mean_255=(84.0,), std_255=(105.0,)).to_json()}
  assert checkpoints.model_differences(legacy, described) == []
  assert checkpoints.model_differences(described, legacy) == []
  assert checkpoints.model_differences(legacy, dict(legacy, std=[100.0])) == [
      "std: [105.0] -> [100.0]"]
  assert checkpoints.model_differences(dict(legacy, model_overrides={"in_channels": 3}), described) == [
      "in_channels: 3 -> 1", "model_overrides: {} -> {'stage_sizes': [1, 1, 1]}"]


# An evaluation job beside training: reader threads that read a workdir until told to stop, and
# print each read's step (or its failure) as a JSON line.
READERS = r"""
import json, os, sys, threading
import jax
import numpy as np
from resnet_jax.training import checkpoints
workdir, stop = sys.argv[1], sys.argv[2]
lock = threading.Lock()

def reader():
  last = 0
  while not os.path.exists(stop):
    if not checkpoints._listed_steps(os.path.join(workdir, "checkpoints")):
      continue
    try:
      variables, spec = checkpoints.load_variables(workdir)
      step = spec.source["step"]
      finite = all(np.isfinite(x).all() for x in jax.tree.leaves(variables))
      line = {"step": step, "ok": bool(finite and step >= last)}
      last = step
    except Exception as e:
      line = {"error": f"{type(e).__name__}: {e}"}
    with lock:
      print(json.dumps(line), flush=True)

threads = [threading.Thread(target=reader) for _ in range(2)]
for t in threads:
  t.start()
for t in threads:
  t.join()
"""


def test_readers_beside_a_trainer_that_saves_every_step_and_keeps_one(tmp_path, digits_config_file):
  """The issue's set-up: train.py saves every step and keeps 1, so each step a reader picks is soon
  deleted under it. A reader process (two threads, as an evaluation job beside training) reads
  throughout; each read returns an intact step (checksummed), steps never go backwards for a
  reader, and nothing prints a traceback (Orbax's asyncio tasks included)."""
  import json
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root)
  config = digits_config_file(tmp_path / "tiny.py", steps=30, lr_boundaries=(), checkpoint_every=1)
  workdir, stop = tmp_path / "run", tmp_path / "stop"
  readers = subprocess.Popen([sys.executable, "-c", READERS, str(workdir), str(stop)], cwd=root,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    trainer = subprocess.run(
        [sys.executable, os.path.join(root, "train.py"), f"--config={config}",
         f"--workdir={workdir}", "--config.keep_checkpoints=1", "--config.image_size=8"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
  finally:
    stop.touch()
    out, err = readers.communicate(timeout=120)
  assert trainer.returncode == 0, trainer.stderr[-3000:]
  assert readers.returncode == 0, err[-3000:]
  lines = [json.loads(line) for line in out.splitlines()]
  assert not [line for line in lines if "error" in line], lines[:3]
  assert all(line["ok"] for line in lines)
  steps = [line["step"] for line in lines]
  assert len(steps) >= 10 and len(set(steps)) >= 3, steps  # Reads overlapped many saves.
  assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
