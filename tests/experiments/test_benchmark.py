"""experiments/benchmark.py: its peers (plain Flax and PyTorch eager and compiled, float32 and bfloat16) build
the same networks as jaxcnn, a compiled peer that cannot compile is left out with the reason, the paired
ratios are computed as stated, and a quick run measures every peer."""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn import models

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture
def benchmark(monkeypatch):
    # Imported by name from its folder, as the torch process (spawned) imports it to run its peers.
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("benchmark")


def test_resnet50_in_plain_flax_and_pytorch_has_jaxcnns_parameters_and_torchvisions_count(benchmark):
    image_shape, num_classes, _, _ = benchmark.MODELS["resnet50"]
    assert image_shape == (224, 224, 3)
    x = jax.ShapeDtypeStruct((1, *image_shape), np.float32)
    for dtype in (None, np.dtype("bfloat16")):
        flax_module = benchmark.FLAX_MODELS["resnet50"](num_classes, dtype=dtype)
        variables = jax.eval_shape(flax_module.init, jax.random.key(0), x)
        assert benchmark.param_count(variables["params"]) == 25_557_032  # torchvision's resnet50
        assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {np.dtype("float32")}
    jaxcnn_params = jax.eval_shape(
        models.create("resnet50", num_classes=num_classes).init, jax.random.key(0), x
    )["params"]
    assert benchmark.param_count(jaxcnn_params) == 25_557_032
    torch_model = benchmark.torch_model("resnet50", num_classes)
    assert sum(p.numel() for p in torch_model.parameters()) == 25_557_032


def _results(rounds: dict) -> dict:
    peers = {
        peer: {
            "train_examples_per_sec": float(np.median(train)),
            "eval_examples_per_sec": float(np.median(evals)),
            "train_rounds": train,
            "eval_rounds": evals,
            "compile_seconds": 1.0,
            "train_mfu": 0.1,
            "eval_mfu": 0.1,
        }
        for peer, (train, evals) in rounds.items()
    }
    model = {"batch_size": 8, "peers": peers, "peak_rss_mib": 100.0, "skipped": {"torch[bf16]": "a reason"}}
    return {"models": {"lenet5": model}}


def _ratio_row(text: str, ratio: str) -> list[str]:
    """The train and eval columns of the row comparing `ratio` ("a/b")."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]
    return next(row[3:] for row in rows if len(row) == 5 and row[2] == ratio)


def test_the_ratios_are_medians_of_ratios_within_a_round_and_torch_best_is_the_faster_each_round(benchmark):
    text = benchmark.table(
        _results({
            "jaxcnn": ([100.0, 100.0, 100.0], [60.0, 60.0, 60.0]),
            "torch": ([50.0, 80.0, 200.0], [30.0, 30.0, 30.0]),
            "torch[compile]": ([80.0, 40.0, 100.0], [20.0, 40.0, 50.0]),
        })
    )  # fmt: skip
    # Rounds by hand: eager 2.0, 1.25, 0.5 (median 1.25); compiled 1.25, 2.5, 1.0 (median 1.25); the
    # faster of the two each round 80, 80, 200: 1.25, 1.25, 0.5 (median 1.25). Eval: 2, 2, 2; 3, 1.5,
    # 1.2 (1.5); the faster 30, 40, 50: 2, 1.5, 1.2 (1.5).
    assert _ratio_row(text, "jaxcnn/torch") == ["1.25x", "2.00x"]
    assert _ratio_row(text, "jaxcnn/torch[compile]") == ["1.25x", "1.50x"]
    assert _ratio_row(text, "jaxcnn/torch best") == ["1.25x", "1.50x"]
    assert "jaxcnn/flax" not in text  # a comparison with a peer that did not run is left out
    assert "lenet5: torch[bf16] skipped: a reason" in text


def test_a_peer_that_is_not_in_the_run_is_refused_naming_the_argument(benchmark, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--peers", "jaxcnn,flax[bf16]"])
    assert "--peers: flax[bf16] not available in this run (the [bf16] peers need --bfloat16" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_a_compiled_torch_peer_without_a_cxx_compiler_is_skipped_with_the_reason(
    benchmark, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # Inductor's C++ compiler on CPU
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # no kernel compiled before
    result = benchmark.bench_model("lenet5", 4, 1, 1, ["torch", "torch[compile]"], {"float32": 1e9})
    assert set(result["peers"]) == {"torch"} and result["peers"]["torch"]["train_examples_per_sec"] > 0
    reason = result["skipped"]["torch[compile]"]
    assert reason.startswith("torch.compile failed: ") and "C++ compiler" in reason
    assert f"torch[compile] skipped: {reason}" in capsys.readouterr().out


@pytest.mark.slow
def test_compiled_and_amp_torch_peers_train_as_eager_does(benchmark):
    """torch.compile changes how the step runs, not what it computes; AMP computes the forward pass in
    bfloat16 (on the CPU: the GPU adds channels_last, a layout that changes no value)."""
    rng = np.random.default_rng(0)
    # Batch 32: at 16, torch 2.13.0's compiled lenet5 (Inductor, CPU) gave its convolutions zero gradients.
    image, label = rng.standard_normal((32, 28, 28, 1), np.float32), rng.integers(0, 10, 32)
    peer = lambda **kwargs: benchmark.TorchPeer("lenet5", 10, image, label, "cpu", **kwargs)
    eager, compiled = peer(compiled=False, bfloat16=False), peer(compiled=True, bfloat16=False)
    for p in (eager, compiled):  # one step in the constructor, two more here
        p.train(2)
    for ours, reference in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), reference.detach().numpy(), rtol=1e-4, atol=1e-6)
    amp = peer(compiled=False, bfloat16=True)
    with amp.autocast():
        assert amp.forward(amp.x).dtype == amp.torch.bfloat16
    assert all(p.dtype == amp.torch.float32 for p in amp.model.parameters())


@pytest.mark.slow
def test_a_quick_run_measures_every_peer_and_writes_the_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    # One CPU device, as a user runs it, not conftest's eight simulated ones.
    flags = [f for f in env.pop("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    done = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "benchmark.py"), "--quick", "--bfloat16", "--out", str(out),
         "--peers", "jaxcnn,jaxcnn[xla],flax,jaxcnn[bf16],flax[bf16],torch,torch[compile]"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for ratio in ("jaxcnn/torch[compile]", "jaxcnn/torch best", "jaxcnn[bf16]/flax[bf16]"):
        assert f" {ratio} " in done.stdout
    results = json.loads(out.read_text())
    peers = results["models"]["lenet5"]["peers"]
    assert list(peers) == [
        "jaxcnn",
        "jaxcnn[xla]",
        "flax",
        "jaxcnn[bf16]",
        "flax[bf16]",
        "torch",
        "torch[compile]",
    ]
    assert all(p["train_examples_per_sec"] > 0 and p["compile_seconds"] > 0 for p in peers.values())
    assert results["machine"]["matmul_peak_gflops_bf16"] > 0
    assert results["loop"]["loop_examples_per_sec"] > 0
