"""Smoke tests of benchmarks/throughput.py and input_pipeline.py: it runs end to end and reports what it measured (no timing asserted)."""

import json
import re


def test_throughput_benchmark_runs(tmp_path, torchvision, capsys, benchmark):
  out = tmp_path / "throughput.json"
  code = benchmark("throughput").main([
      "--models", "resnet18", "--batch", "4", "--image-size", "32", "--dtype", "float32",
      "--steps", "1", "--windows", "2", "--warmup", "1", "--frameworks", "jax,torch_eager",
      "--out", str(out)])
  assert code == 0
  results = json.loads(out.read_text())
  assert {(r["mode"], r["framework"]) for r in results["runs"]} == {
      ("train", "jax"), ("train", "torch_eager"), ("infer", "jax"), ("infer", "torch_eager")}
  assert all(r["images_per_s"] > 0 and len(r["windows"]) == 2 for r in results["runs"])
  assert "| resnet18 | train |" in capsys.readouterr().out


def test_input_pipeline_benchmark_runs(torchvision, capsys, benchmark):
  """Every pipeline runs on the same generated photos; the last line is the issue's summary line."""
  assert benchmark("input_pipeline").main(["--images", "8", "--batch", "2", "--workers", "1",
                                       "--windows", "1", "--batches", "1",
                                       "--warmup", "1", "--warmup-seconds", "0",
                                       "--resize-draws", "1"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert "| torchvision DataLoader, uint8 out |" in "\n".join(lines)
  assert "| image_ops.resize_box (OpenCV blur + bilinear warp; the default) |" in "\n".join(lines)
  assert re.fullmatch(r"input pipeline: resnet_jax/torchvision = \d+\.\d\dx at 1 workers", lines[-1])
