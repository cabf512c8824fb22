"""ema against torch.optim.swa_utils.AveragedModel driven as torchvision's classification reference."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from resnet_jax.training import checkpoints, ema, sharding, steps, train_lib


class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
  """references/classification/utils.py's class (not shipped in the torchvision package): an
  AveragedModel of parameters and buffers with `decay * avg + (1 - decay) * param`."""

  def __init__(self, model, decay):
    def ema_avg(avg_model_param, model_param, num_averaged):
      return decay * avg_model_param + (1 - decay) * model_param
    super().__init__(model, "cpu", ema_avg, use_buffers=True)


def test_adjusted_decay_is_the_reference_s():
  # torchvision's V2 recipe: 8 GPUs x 128, --model-ema-steps 32, --epochs 600, decay 0.99998.
  world_size, batch_size, steps, epochs, decay = 8, 128, 32, 600, 0.99998
  adjust = world_size * batch_size * steps / epochs
  alpha = min(1.0, (1.0 - decay) * adjust)
  assert ema.adjusted_decay(decay, global_batch_size=1024, every=32, epochs=600) == 1.0 - alpha
  # A short run makes alpha saturate at 1: the EMA is then the model itself.
  assert ema.adjusted_decay(0.9, global_batch_size=64, every=4, epochs=2) == 0.0


def test_ema_equals_torch_averaged_model_over_the_same_weights():
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
  decay, every, steps_per_epoch, warmup_epochs = 0.8, 4, 8, 1  # An epoch is 2 EMA updates.
  reference = ExponentialMovingAverage(model, decay)
  rng = np.random.default_rng(0)
  shapes = {"weight": (3, 1, 3, 3), "bias": (3,), "bn_weight": (3,), "bn_bias": (3,),
            "running_mean": (3,), "running_var": (3,)}
  ours = None
  for i in range(5 * steps_per_epoch):  # Steps of 5 epochs, the first one warm-up.
    values = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    with torch.no_grad():  # The model after optimizer step i.
      model[0].weight.copy_(torch.from_numpy(values["weight"]))
      model[0].bias.copy_(torch.from_numpy(values["bias"]))
      model[1].weight.copy_(torch.from_numpy(values["bn_weight"]))
      model[1].bias.copy_(torch.from_numpy(values["bn_bias"]))
      model[1].running_mean.copy_(torch.from_numpy(values["running_mean"]))
      model[1].running_var.copy_(torch.from_numpy(values["running_var"]))
    # train_one_epoch: i is the batch index in the epoch.
    epoch, i_in_epoch = divmod(i, steps_per_epoch)
    if i_in_epoch % every == 0:
      reference.update_parameters(model)
      if epoch < warmup_epochs:
        reference.n_averaged.fill_(0)
    params = {k: jnp.asarray(values[k]) for k in ("weight", "bias", "bn_weight", "bn_bias")}
    stats = {k: jnp.asarray(values[k]) for k in ("running_mean", "running_var")}
    ours = ema.init(params, stats) if ours is None else ours
    ours = ema.update(ours, params, stats, i, decay=decay, every=every,
                      warmup_steps=warmup_epochs * steps_per_epoch)
    theirs = reference.module
    want = {"weight": theirs[0].weight, "bias": theirs[0].bias, "bn_weight": theirs[1].weight,
            "bn_bias": theirs[1].bias, "running_mean": theirs[1].running_mean,
            "running_var": theirs[1].running_var}
    got = {**ours["params"], **ours["batch_stats"]}
    for k in want:  # The same float32 operations in the same order.
      np.testing.assert_allclose(got[k], want[k].detach().numpy(), rtol=1e-6, atol=1e-7,
                                 err_msg=f"step {i} {k}")
  assert int(ours["count"]) == int(reference.n_averaged)


def test_training_with_ema_evaluates_and_saves_it(tmp_path, tiny_config):
  config = tiny_config(model_ema=True, model_ema_steps=2, model_ema_decay=0.9, num_train_steps=6,
                       eval_every_steps=3, num_epochs=1.0)
  train_lib.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  assert [m["step"] for m in lines if m["split"] == "eval_ema"] == [3, 6]
  raw, _ = checkpoints.load_variables(str(tmp_path))
  averaged, spec = checkpoints.load_variables(str(tmp_path), ema=True)
  assert jax.tree.structure(raw) == jax.tree.structure(averaged)
  assert not np.allclose(raw["params"]["fc"]["kernel"], averaged["params"]["fc"]["kernel"])
  # The EMA's own evaluation is what evaluating the saved EMA weights gives.
  model = spec.build()  # The model the run trained, as its ModelSpec records it.
  state = steps.TrainState(step=0, params=averaged["params"],
                               batch_stats=averaged["batch_stats"], opt_state=None)
  data = train_lib.create_data(config)
  layout = sharding.Layout("jit")
  fn = jax.jit(lambda s, b: steps.eval_step(s, b, model=model, mean=config.mean, std=config.std))
  result = train_lib.evaluate(fn, state, train_lib.eval_batches(config, data, layout), layout)
  assert result["top1"] == pytest.approx([m for m in lines if m["split"] == "eval_ema"][-1]["top1"])


def test_ema_weights_need_an_ema_run(tmp_path, capsys, tiny_config):
  train_lib.train_and_evaluate(tiny_config(num_train_steps=3), str(tmp_path))
  with pytest.raises(ValueError, match="no EMA weights"):
    checkpoints.load_variables(str(tmp_path), ema=True)
  from resnet_jax import cli  # One line, exit 2, for the CLI's --ema on a workdir without EMA.
  out = str(tmp_path / "x.safetensors")
  assert cli.main(["export", "--checkpoint", str(tmp_path), "--out", out, "--ema"]) == 2
  assert "no EMA weights" in capsys.readouterr().err and not os.path.exists(out)
