"""Tests of resnet_jax.training.evaluate: the three protocols on a tiny checkpoint against a slow reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from resnet_jax import cli, models
from resnet_jax.training import checkpoints, evaluate, steps
from resnet_jax.data import input_pipeline, protocols
from resnet_jax.weights.spec import ModelSpec

# A 3-block CIFAR-style net on 8x8 one-channel digits: compiles and runs in a second.
OVERRIDES = {"stage_sizes": [1, 1, 1], "in_channels": 1}
MEAN, STD = (84.0,), (105.0,)
NUM_EXAMPLES = 13  # Odd, and not a multiple of the images per call nor of the 8 devices.


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A saved resnet20-shaped model with random weights and non-trivial BatchNorm statistics."""
  model = models.get_model("resnet20", num_classes=10, **OVERRIDES)
  # Jitted, with RBG keys: op-by-op init and threefry normals each cost XLA:CPU many compilations.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 8, 8, 1)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape, np.float32),
                           variables)
  variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])  # Variances > 0.
  directory = _save(tmp_path_factory.mktemp("ckpt") / "model", variables)
  return directory, model, variables


def _save(path, variables):
  spec = ModelSpec("resnet20", 10, in_channels=1, model_overrides={"stage_sizes": [1, 1, 1]},
                   image_size=8, resize_size=round(8 * 256 / 224), mean_255=MEAN, std_255=STD)
  return checkpoints.save_variables(path, variables, spec)


@pytest.fixture(scope="module")
def source():
  test = input_pipeline.digits("test")
  return input_pipeline.InMemorySource(test.images[:NUM_EXAMPLES], test.labels[:NUM_EXAMPLES], 10)


def reference_scores(model, variables, images, views_fn, average):
  """One unsharded call per view shape, straight through protocols.averaged_scores."""
  logits_fn = jax.jit(functools.partial(model.apply, variables))
  return protocols.averaged_scores(logits_fn, images, views_fn, mean=np.array(MEAN),
                                   std=np.array(STD), average=average)


@pytest.mark.parametrize("protocol,average", [("center", "softmax"), ("ten_crop", "softmax"),
                                              ("multi_scale", "softmax"), ("ten_crop", "logits")],
                         ids=["center", "ten_crop", "multi_scale", "ten_crop_logits"])
def test_protocols_match_reference_and_count_each_example_once(checkpoint, source, protocol, average):
  directory, model, variables = checkpoint
  # 4 images per call and 1 view per device: every call is padded, the last block holds 1 image.
  # Three scales instead of five: each view shape is one more compilation, here and in the reference.
  scales = (8, 11, 14) if protocol == "multi_scale" else None
  result = evaluate.evaluate(directory, source, protocol, average=average, per_device_batch=1,
                             images_per_call=4, scales=scales)
  views_fn = protocols.get_protocol(protocol, **evaluate.view_sizes(protocol, 8, scales=scales))
  images = [source[i]["image"] for i in range(NUM_EXAMPLES)]
  expected = reference_scores(model, variables, images, views_fn, average)
  assert result.count == NUM_EXAMPLES
  np.testing.assert_array_equal(result.indices, np.arange(NUM_EXAMPLES))
  np.testing.assert_array_equal(result.labels, source.labels)
  np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-6)
  assert result.errors == pytest.approx(protocols.topk_errors(expected, source.labels))
  assert result.views == {"center": 1, "ten_crop": 10, "multi_scale": 6}[protocol]


def test_tied_scores_count_alike_in_training_evaluation_and_evaluate(checkpoint, source, tmp_path):
  """A zero classifier scores every class alike: both paths count label 0 (and only it) a top-1 hit."""
  _, model, variables = checkpoint
  tied = jax.tree.map(np.asarray, variables)
  tied["params"]["fc"] = jax.tree.map(np.zeros_like, tied["params"]["fc"])
  labels = np.arange(NUM_EXAMPLES) % 10  # Two examples of label 0 (each a top-1 hit), ...
  relabelled = input_pipeline.InMemorySource(source.images, labels, 10)
  result = evaluate.evaluate(_save(tmp_path / "tied", tied), relabelled, "center", per_device_batch=1)

  views = [protocols.center_views(source[i]["image"], **evaluate.view_sizes("center", 8))[0][0]
           for i in range(NUM_EXAMPLES)]
  batch = {"image": np.stack(views), "label": labels, "mask": np.ones(NUM_EXAMPLES, np.float32)}
  step = jax.jit(lambda params, stats, batch: steps.eval_step(
      steps.TrainState(step=0, params=params, batch_stats=stats, opt_state=None),
      batch, model=model, mean=MEAN, std=STD))
  sums = step(tied["params"], tied["batch_stats"], batch)

  for k, key in ((1, "top1"), (5, "top5")):
    train_hits = int(sums[key])
    assert train_hits == int(np.sum(labels < k))  # Tied classes rank by index: the first k hit.
    assert result.errors[k] == pytest.approx(100.0 * (1 - train_hits / NUM_EXAMPLES))


def test_limit_scores_a_prefix(checkpoint, source):
  result = evaluate.evaluate(checkpoint[0], source, "center", limit=5, per_device_batch=1)
  assert result.count == 5 and len(result.scores) == 5


def test_paper_sizes_at_224():
  assert evaluate.view_sizes("ten_crop", 224) == {"resize_size": 256, "crop_size": 224}
  assert evaluate.view_sizes("multi_scale", 224) == {"scales": (224, 256, 384, 480, 640)}
  assert evaluate.view_sizes("multi_scale", 32) == {"scales": (32, 37, 55, 69, 91)}
  with pytest.raises(ValueError, match="smaller than the crop"):
    evaluate.view_sizes("center", 32, resize_size=30)


def test_preprocessing_is_the_spec_s_unless_overridden():
  spec = ModelSpec("resnet50", 1000)
  prep = evaluate.preprocessing(spec)
  assert (prep.mean, prep.std, prep.image_size) == (spec.mean_255, spec.std_255, 224)
  assert evaluate.preprocessing(spec, image_size=8, std=(2.0, 2.0, 2.0)) == evaluate.Preprocessing(
      spec.mean_255, (2.0, 2.0, 2.0), 8)


def test_main_prints_errors(checkpoint, capsys):
  code = cli.main(["evaluate", "--checkpoint", str(checkpoint[0]), "--dataset", "digits", "--protocol",
                   "ten_crop", "--limit", "7", "--per-device-batch", "2"])
  out = capsys.readouterr().out
  assert code == 0
  assert "digits/test (7 images), 10-crop testing (10 views, softmax average): top-1 error" in out
  assert "top-5 error" in out


def test_main_refuses_a_checkpoint_without_a_spec(checkpoint, tmp_path, capsys):
  """What a current-main training run or an old save_variables wrote: the fix is named, one line."""
  variables, _ = checkpoints.load_variables(checkpoint[0])
  directory = checkpoints.save_variables(tmp_path / "old", variables, ModelSpec("resnet20", 10))
  (tmp_path / "old" / "model.json").write_text('{"arch": "resnet20", "num_classes": 10}')
  assert cli.main(["evaluate", "--checkpoint", directory, "--dataset", "digits"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "older resnet_jax" in err and "model.json" in err


def test_folder_labels_follow_the_model_s_classes(folder_run):
  """The 'val' folder lacks 'bee': its 'cat' images are label 2, the model's 'cat', not 1."""
  workdir, root = folder_run
  result = evaluate.evaluate(workdir, "folder", split="val", data_dir=root, per_device_batch=1)
  assert result.count == 4
  np.testing.assert_array_equal(np.sort(result.labels), [0, 0, 2, 2])


def test_center_uses_the_resize_recorded_with_converted_weights(checkpoint, source):
  directory, model, variables = checkpoint
  _, spec = checkpoints.load_variables(directory)
  recorded = evaluate.evaluate((variables, spec.replace(resize_size=12)), source, "center",
                               per_device_batch=1, images_per_call=4)
  views_fn = protocols.get_protocol("center", resize_size=12, crop_size=8)
  images = [source[i]["image"] for i in range(NUM_EXAMPLES)]
  expected = reference_scores(model, variables, images, views_fn, "softmax")
  np.testing.assert_allclose(np.asarray(recorded.scores)[np.argsort(recorded.indices)], expected,
                             rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Data read from a directory: image folders and prepared copies; data that does not fit the model.

def test_evaluate_reads_both_prepared_copies_and_defaults_to_validation(folder_run, tmp_path, capsys):
  """`prepare` copies of the run's data, folder and ArrayRecord, score alike and label as the source;
  the split defaults to 'validation', or to 'val' where the copy has no 'validation'."""
  from resnet_jax.data import prepare
  workdir, root = folder_run
  original = evaluate.evaluate(workdir, "folder", split="val", data_dir=root, per_device_batch=1)
  results = {}
  for format in ("folder", "array_record"):
    out = tmp_path / format
    prepare.prepare(prepare.folder_items(root), str(out), max_size=64, progress=False, format=format)
    results[format] = evaluate.evaluate(workdir, format, data_dir=str(out), per_device_batch=1)
    assert results[format].split == "val"  # No 'validation' in the copy: its 'val'.
    np.testing.assert_array_equal(np.sort(results[format].labels), np.sort(original.labels))
    (out / "validation").symlink_to(out / "val", target_is_directory=True)
    assert cli.main(["evaluate", "--checkpoint", workdir, "--dataset", format,
                     "--data-dir", str(out)]) == 0
    assert f" on {format}/validation ({original.count} images)" in capsys.readouterr().out
  # The same JPEG bytes in both formats: the same scores, example by example.
  folder, records = results["folder"], results["array_record"]
  order = lambda r: np.lexsort((r.scores[:, 0], r.labels))
  np.testing.assert_array_equal(folder.scores[order(folder)], records.scores[order(records)])


def test_a_model_that_does_not_fit_the_data_is_refused_in_one_line(folder_run, checkpoint, source,
                                                                    tmp_path, capsys):
  """Classes or channels that differ from the data's are refused before anything is scored: a
  3-class RGB run on 10-class grey digits, the 10-class grey model on 3 classes or as RGB, and an
  image folder whose classes the model lacks."""
  workdir, _ = folder_run
  assert cli.main(["evaluate", "--checkpoint", workdir, "--dataset", "digits"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "has 3 classes and takes 3-channel images" in err
  assert "digits/test has 10 classes and 1-channel images" in err
  variables, spec = checkpoints.load_variables(checkpoint[0])
  three = input_pipeline.InMemorySource(source.images, source.labels % 3, num_classes=3)
  with pytest.raises(ValueError, match="has 10 classes .* the data has 3 classes"):
    evaluate.evaluate((variables, spec), three)
  rgb = input_pipeline.InMemorySource(np.repeat(source.images, 3, -1), source.labels, 10)
  with pytest.raises(ValueError, match="takes 1-channel images, but the data has 10 classes and "
                                       "3-channel images"):
    evaluate.evaluate((variables, spec), rgb)
  for name in ("wasp", "ant"):  # 'ant' is the model's: one unknown class is enough to refuse.
    (tmp_path / "validation" / name).mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "validation" / name / "a.png")
  assert cli.main(["evaluate", "--checkpoint", workdir, "--dataset", "folder",
                   "--data-dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "2 classes, 1 of them not among the model's 3 (e.g. 'wasp'" in err
