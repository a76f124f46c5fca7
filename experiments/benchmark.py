"""Train-step and eval throughput of jaxcnn against the same nets in plain Flax and in PyTorch eager.

    .venv/bin/python experiments/benchmark.py                      # all four models, ~12 min on 2 cores
    .venv/bin/python experiments/benchmark.py --models lenet5 --rounds 3 --out /tmp/b.json
    .venv/bin/python experiments/benchmark.py --quick              # smoke test, well under a minute

For each model (lenet5 and simple_cnn at 28x28x1, resnet20 at 32x32x3, resnet18 at 224x224x3 with a
smaller batch) it measures, float32, SGD with momentum:
  - `jaxcnn`: the NNX model (`jaxcnn.models.create_nnx`) trained natively by `jaxcnn.training.train_step`,
    jitted, lowering on `impl="auto"` (what `experiments/train.py` runs);
  - `jaxcnn[linen]`: the same architecture as a Linen module (`jaxcnn.models.create`, through
    `models.bridge.LinenModel`), so `jaxcnn / jaxcnn[linen]` compares the two APIs;
  - `jaxcnn[xla]`: the NNX model with `impl="xla"`, i.e. the lowering plain Flax uses, so
    `jaxcnn[xla] / flax` is the cost of the abstraction alone;
  - `flax`: the architecture written with `flax.linen` (nn.Conv, nn.max_pool, nn.BatchNorm, ...),
    same parameter count (asserted), stepped by the same `train_step`;
  - `torch`: PyTorch eager with `torch.set_num_threads(cores)`, when torch is installed, in a process of
    its own (its OpenMP threads and those of jaxcnn's oneDNN would otherwise compete for the cores).
The JAX peers share one process and so its settings: the script calls `jaxcnn.configure_cpu()`, which
keeps CPU convolutions and reductions off YNNPACK and has malloc reuse XLA's temporary buffers (see
`jaxcnn/runtime.py`), for plain Flax too. For plain Flax as jaxlib runs it by default, run the script again
with `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution,reduce
MALLOC_ARENA_MAX=16` (any `MALLOC_*` variable keeps configure_cpu off malloc; 16 arenas is glibc's default
on 2 cores, 8 per core).
Peers alternate within each round; speeds are medians over rounds and ratios are medians of the ratios
within a round (paired), since the machine is shared and timings swing. Also reported: eval (forward)
throughput, compile time, the process's peak RSS after each model, and MFU = FLOPs per example
(`jaxcnn.summary`, x3 for a train step) x examples/s / the float32 peak of a measured 2048x2048 matmul.
Finally the training loop (`jaxcnn.training.train`, which `train_and_evaluate` runs after `build_run`, on
`synthetic` data) against the bare step, for lenet5: the ratio of their throughputs and the loop's Python
overhead per step.

Writes every figure as JSON to `--out` (default `benchmark.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxcnn
from jaxcnn import models, training

MODELS = {  # name: (image shape, classes, default batch size)
    "lenet5": ((28, 28, 1), 10, 128),
    "simple_cnn": ((28, 28, 1), 10, 128),
    "resnet20": ((32, 32, 3), 10, 128),
    "resnet18": ((224, 224, 3), 1000, 8),
}
LEARNING_RATE, MOMENTUM = 0.01, 0.9


# ---------------------------------------------------------------- plain Flax versions of the models


class FlaxLeNet5(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding=2)(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(84)(nn.relu(nn.Dense(120)(x))))
        return nn.Dense(self.num_classes)(x)


class FlaxSimpleCNN(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        for features in (32, 64):
            x = nn.avg_pool(nn.relu(nn.Conv(features, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(x)


class FlaxBasicBlock(nn.Module):
    features: int
    stride: int
    shortcut: str  # "A": subsample and zero-pad channels, "B": 1x1 conv + BatchNorm

    @nn.compact
    def __call__(self, x, train):
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
        y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = norm()(nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            if self.shortcut == "B":
                x = norm()(nn.Conv(self.features, (1, 1), self.stride, use_bias=False)(x))
            else:
                x = x[:, :: self.stride, :: self.stride]
                extra = self.features - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class FlaxResNet(nn.Module):
    stage_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    imagenet_stem: bool
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False):
        if self.imagenet_stem:
            x = nn.Conv(self.widths[0], (7, 7), 2, padding=3, use_bias=False)(x)
        else:
            x = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        if self.imagenet_stem:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        shortcut = "B" if self.imagenet_stem else "A"
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(size):
                x = FlaxBasicBlock(width, 2 if i > 0 and j == 0 else 1, shortcut)(x, train)
        return nn.Dense(self.num_classes)(x.mean((1, 2)))


FLAX_MODELS = {
    "lenet5": FlaxLeNet5,
    "simple_cnn": FlaxSimpleCNN,
    "resnet20": lambda num_classes: FlaxResNet((3, 3, 3), (16, 32, 64), False, num_classes),
    "resnet18": lambda num_classes: FlaxResNet((2, 2, 2, 2), (64, 128, 256, 512), True, num_classes),
}


# ---------------------------------------------------------------- PyTorch versions (NCHW)


def torch_model(name: str, num_classes: int):
    import torch
    from torch import nn as tnn

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride, shortcut):
            super().__init__()
            self.body = tnn.Sequential(
                tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU(),
                tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout),
            )  # fmt: skip
            self.stride, self.extra, self.down = stride, cout - cin, None
            if (stride != 1 or cin != cout) and shortcut == "B":
                self.down = tnn.Sequential(
                    tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
                )

        def forward(self, x):
            if self.down is not None:
                short = self.down(x)
            elif self.stride != 1 or self.extra:
                short = tnn.functional.pad(
                    x[:, :, :: self.stride, :: self.stride],
                    (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2),
                )
            else:
                short = x
            return torch.relu(self.body(x) + short)

    def resnet(stage_sizes, widths, imagenet):
        if imagenet:
            stem = [tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False), tnn.BatchNorm2d(widths[0]), tnn.ReLU(),
                    tnn.MaxPool2d(3, 2, 1)]  # fmt: skip
        else:
            stem = [tnn.Conv2d(3, widths[0], 3, 1, 1, bias=False), tnn.BatchNorm2d(widths[0]), tnn.ReLU()]
        blocks, cin = [], widths[0]
        for i, (size, width) in enumerate(zip(stage_sizes, widths)):
            for j in range(size):
                blocks.append(Block(cin, width, 2 if i > 0 and j == 0 else 1, "B" if imagenet else "A"))
                cin = width
        head = [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, num_classes)]
        return tnn.Sequential(*stem, *blocks, *head)

    if name == "lenet5":
        return tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
            tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, num_classes),
        )  # fmt: skip
    if name == "simple_cnn":
        return tnn.Sequential(
            tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.AvgPool2d(2),
            tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.AvgPool2d(2), tnn.Flatten(),
            tnn.Linear(3136, 256), tnn.ReLU(), tnn.Linear(256, num_classes),
        )  # fmt: skip
    if name == "resnet20":
        return resnet((3, 3, 3), (16, 32, 64), imagenet=False)
    return resnet((2, 2, 2, 2), (64, 128, 256, 512), imagenet=True)


# ---------------------------------------------------------------- peers: (train, eval) closures


def param_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


class JaxPeer:
    """A Flax module (NNX or Linen) stepped by `jaxcnn.training.train_step`, compiled ahead of time."""

    def __init__(self, module, image_shape, batch):
        state = training.create_train_state(
            module, optax.sgd(LEARNING_RATE, momentum=MOMENTUM), image_shape, seed=0
        )
        self.params = param_count(state.params)
        started = time.perf_counter()
        self.train_fn = jax.jit(training.train_step, donate_argnums=0).lower(state, batch).compile()
        self.compile_seconds = time.perf_counter() - started
        forward = lambda variables, x: state.apply_fn(variables, x, train=False)
        self.eval_fn = jax.jit(forward).lower(state.variables(), batch["image"]).compile()
        self.state, self.batch = state, batch

    def train(self, steps: int) -> None:
        for _ in range(steps):
            self.state, metrics = self.train_fn(self.state, self.batch)
        jax.block_until_ready(metrics)

    def eval(self, steps: int) -> None:
        for _ in range(steps):
            logits = self.eval_fn(self.state.variables(), self.batch["image"])
        jax.block_until_ready(logits)


class TorchPeer:
    """The PyTorch model in eager mode: SGD with momentum on cross-entropy, as the JAX peers, on `device`
    ("cpu" or "cuda"). On a GPU its float32 matmuls may use TensorFloat-32, as JAX's and cuDNN's
    convolutions do by default (PyTorch's own default for matmuls is full float32)."""

    def __init__(self, name, num_classes, image, label, threads, device):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        self.torch, self.device = torch, torch.device(device)
        self.model = torch_model(name, num_classes).to(self.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        self.x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy()).to(self.device)
        self.y = torch.from_numpy(label.astype(np.int64)).to(self.device)
        started = time.perf_counter()
        self.train(1)  # eager: the first step's one-off allocations stand in for compilation
        self.compile_seconds = time.perf_counter() - started

    def train(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
        self._wait()

    def eval(self, steps: int) -> None:
        self.model.eval()
        with self.torch.no_grad():
            for _ in range(steps):
                self.model(self.x)
        self._wait()

    def _wait(self) -> None:
        """Until the queued GPU work is done, as `jax.block_until_ready` for the JAX peers (on the CPU,
        eager PyTorch has already finished)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def _serve_torch_peer(connection, *peer_args) -> None:
    """The torch process: builds a `TorchPeer`, then runs the (method, steps) it is sent until None."""
    peer = TorchPeer(*peer_args)
    connection.send((peer.params, peer.compile_seconds))
    while (request := connection.recv()) is not None:
        method, steps = request
        getattr(peer, method)(steps)
        connection.send(None)


class TorchProcess:
    """A `TorchPeer` in a process of its own, driven like the JAX peers (`train(steps)`, `eval(steps)`).

    PyTorch and jaxcnn's oneDNN each bring an OpenMP runtime whose idle threads spin for a while after a
    parallel region: in one process, each library's threads would compete with the other's for the cores.
    """

    def __init__(self, name, num_classes, batch, threads, device):
        import multiprocessing

        image, label = np.asarray(batch["image"]), np.asarray(batch["label"])
        self._connection, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve_torch_peer,
            args=(child, name, num_classes, image, label, threads, device),
            daemon=True,
        )
        self._process.start()
        self.params, self.compile_seconds = self._connection.recv()

    def _run(self, method: str, steps: int) -> None:
        self._connection.send((method, steps))
        self._connection.recv()

    def train(self, steps: int) -> None:
        self._run("train", steps)

    def eval(self, steps: int) -> None:
        self._run("eval", steps)

    def close(self) -> None:
        self._connection.send(None)
        self._process.join()


# ---------------------------------------------------------------- measurements


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """float32 FLOP/s of a jitted `size`x`size` matmul: the fastest of `repeats`, the peak (a median
    taken during a slow phase of a shared host made MFU exceed 100% later in the run)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, a))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        times.append(time.perf_counter() - started)
    return 2 * size**3 / min(times)


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def throughput(run, steps: int, batch_size: int) -> float:
    started = time.perf_counter()
    run(steps)
    return steps * batch_size / (time.perf_counter() - started)


def bench_model(
    name: str,
    batch_size: int,
    steps: int,
    rounds: int,
    torch_threads: int,
    peak: float,
    bfloat16: bool,
    torch_device: str = "cpu",
) -> dict:
    """The peers' train and eval throughputs on `name`, in `rounds` alternating rounds (torch, with
    `torch_threads` threads, on `torch_device`, in a process of its own; 0 threads: without torch)."""
    image_shape, num_classes, _ = MODELS[name]
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((batch_size, *image_shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, num_classes, batch_size), jnp.int32),
        "mask": jnp.ones((batch_size,), jnp.float32),
    }
    nnx_model = functools.partial(
        models.create_nnx, name, num_classes=num_classes, input_shape=image_shape, rngs=nnx.Rngs(0)
    )
    peers = {
        "jaxcnn": JaxPeer(nnx_model(), image_shape, batch),
        "jaxcnn[linen]": JaxPeer(models.create(name, num_classes=num_classes), image_shape, batch),
        "jaxcnn[xla]": JaxPeer(nnx_model(impl="xla"), image_shape, batch),
        "flax": JaxPeer(FLAX_MODELS[name](num_classes=num_classes), image_shape, batch),
    }
    if bfloat16:  # compute in bfloat16, parameters float32: `config.compute.dtype = "bfloat16"`
        peers["jaxcnn[bf16]"] = JaxPeer(nnx_model(dtype=jnp.bfloat16), image_shape, batch)
    if torch_threads:
        peers["torch"] = TorchProcess(name, num_classes, batch, torch_threads, torch_device)
    counts = {peer: p.params for peer, p in peers.items()}
    if len(set(counts.values())) != 1:
        raise AssertionError(f"{name}: parameter counts differ between peers: {counts}")
    flops = jaxcnn.summary(models.create(name, num_classes=num_classes), image_shape).total_flops
    for p in peers.values():  # warm up caches and allocators outside the timed rounds
        p.train(1)
        p.eval(1)
    train, evals = {k: [] for k in peers}, {k: [] for k in peers}
    order = list(peers)
    try:
        for r in range(rounds):
            rotated = order[r % len(order) :] + order[: r % len(order)]
            for peer in rotated:
                train[peer].append(throughput(peers[peer].train, steps, batch_size))
            for peer in rotated:
                evals[peer].append(throughput(peers[peer].eval, steps, batch_size))
    finally:
        if "torch" in peers:
            peers["torch"].close()
    result = {
        "image_shape": image_shape,
        "batch_size": batch_size,
        "params": counts["jaxcnn"],
        "flops_per_example": flops,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peers": {},
    }
    for peer, p in peers.items():
        train_speed, eval_speed = statistics.median(train[peer]), statistics.median(evals[peer])
        result["peers"][peer] = {
            "train_examples_per_sec": round(train_speed, 1),
            "eval_examples_per_sec": round(eval_speed, 1),
            "train_rounds": [round(v, 1) for v in train[peer]],
            "eval_rounds": [round(v, 1) for v in evals[peer]],
            "compile_seconds": round(p.compile_seconds, 2),
            "train_mfu": 3 * flops * train_speed / peak,
            "eval_mfu": flops * eval_speed / peak,
        }
    return result


def bench_loop(batch_size: int, steps: int, log_every: int) -> dict:
    """lenet5's examples/s in the training loop (`training.train`, through `train_and_evaluate`, synthetic
    data) against its bare jitted step, and the loop's Python overhead per step: the difference of their
    times per step."""
    config = training.default_config()
    config.update(
        model="lenet5", dataset="synthetic", batch_size=batch_size, num_steps=steps, log_every=log_every,
        checkpoint_every=steps, test_examples=batch_size,
    )  # fmt: skip
    config.eval.every = steps
    with tempfile.TemporaryDirectory() as workdir:
        result = training.train_and_evaluate(config, workdir, handle_signals=False)
    lenet5 = models.create_nnx("lenet5", rngs=nnx.Rngs(0))
    bare = JaxPeer(lenet5, (28, 28, 1), _loop_like_batch(batch_size))
    bare.train(1)
    speed = throughput(bare.train, steps, batch_size)
    return {
        "model": "lenet5",
        "batch_size": batch_size,
        "steps": steps,
        "loop_examples_per_sec": round(result.examples_per_sec, 1),
        "bare_step_examples_per_sec": round(speed, 1),
        "loop_over_bare": result.examples_per_sec / speed,
        "loop_overhead_ms_per_step": 1e3 * batch_size * (1 / result.examples_per_sec - 1 / speed),
    }


def _loop_like_batch(batch_size: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "image": jnp.asarray(rng.standard_normal((batch_size, 28, 28, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
        "mask": jnp.ones((batch_size,), jnp.float32),
    }


# ---------------------------------------------------------------- report


def paired_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a's speed over b's in the same round: the peers ran seconds apart, so a
    slow phase of the machine (other jobs, neighbours on the host) slows both and cancels out."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def table(results: dict) -> str:
    header = ("model", "peer", "train ex/s", "eval ex/s", "compile s", "train MFU", "eval MFU")
    lines = [header]
    for name, r in results["models"].items():
        for peer, p in r["peers"].items():
            lines.append((
                name, peer, f"{p['train_examples_per_sec']:,.0f}", f"{p['eval_examples_per_sec']:,.0f}",
                f"{p['compile_seconds']:.1f}", f"{p['train_mfu']:.1%}", f"{p['eval_mfu']:.1%}",
            ))  # fmt: skip
    ratio_header = ("model", "batch", "jaxcnn/torch", "jaxcnn/flax", "jaxcnn/jaxcnn[linen]",
                    "jaxcnn[xla]/flax", "eval jaxcnn/torch", "eval jaxcnn/flax", "peak RSS MiB")  # fmt: skip
    ratios = [ratio_header]
    for name, r in results["models"].items():
        ratio = lambda a, b, kind="train", peers=r["peers"]: (
            f"{paired_ratio(peers[a][f'{kind}_rounds'], peers[b][f'{kind}_rounds']):.2f}x"
            if a in peers and b in peers
            else "n/a"
        )
        ratios.append((
            name, str(r["batch_size"]), ratio("jaxcnn", "torch"), ratio("jaxcnn", "flax"),
            ratio("jaxcnn", "jaxcnn[linen]"), ratio("jaxcnn[xla]", "flax"), ratio("jaxcnn", "torch", "eval"),
            ratio("jaxcnn", "flax", "eval"), f"{r['peak_rss_mib']:,.0f}",
        ))  # fmt: skip
    out = [_render(lines), "", _render(ratios)]
    if "loop" in results:
        loop = results["loop"]
        out += [
            "",
            f"training loop (lenet5, synthetic, batch {loop['batch_size']}): "
            f"{loop['loop_examples_per_sec']:,.0f} ex/s vs bare step "
            f"{loop['bare_step_examples_per_sec']:,.0f} ex/s ({loop['loop_over_bare']:.2f}x; "
            f"{loop['loop_overhead_ms_per_step']:.2f} ms of overhead per step)",
        ]
    return "\n".join(out)


def _render(rows) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    fmt = lambda row: "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
    )
    return "\n".join([fmt(rows[0]), "  ".join("-" * w for w in widths), *map(fmt, rows[1:])])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: 128 (resnet18: 8)")
    parser.add_argument("--steps", type=int, default=0, help="steps per timed run (0: 10, resnet18: 3)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; figures are medians")
    parser.add_argument(
        "--loop-steps", type=int, default=200, help="steps of the training-loop run (0: skip)"
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    parser.add_argument(
        "--bfloat16", action="store_true", help="add jaxcnn computing in bfloat16 (float32 parameters)"
    )
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: the cores)")
    parser.add_argument(
        "--torch-device", default="", help='"cpu" or "cuda" (default: "cuda" where JAX runs on a GPU)'
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    parser.add_argument("--out", default="benchmark.json", help="JSON output path")
    args = parser.parse_args(argv)
    cpu_settings = jaxcnn.configure_cpu()  # before JAX starts its backend
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.quick:
        names = names if args.models != ",".join(MODELS) else ["lenet5"]
        args.batch_size, args.steps, args.rounds, args.loop_steps = args.batch_size or 16, 2, 1, 4
    torch_threads = args.torch_threads or os.cpu_count() or 1
    torch_device = args.torch_device or ("cuda" if jax.default_backend() == "gpu" else "cpu")
    # Looked up, not imported: torch runs in a process of its own (`TorchProcess`).
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    peak = matmul_peak_flops(512 if args.quick else 2048)
    results = {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),  # configure_cpu() adds one, see jaxcnn/runtime.py
            "configure_cpu": cpu_settings,
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "torch": importlib.metadata.version("torch") if use_torch else None,
            "torch_threads": torch_threads if use_torch else None,
            "torch_device": torch_device if use_torch else None,
            "devices": [str(device.device_kind) for device in jax.local_devices()],
        },
        "settings": {"rounds": args.rounds, "learning_rate": LEARNING_RATE, "momentum": MOMENTUM},
        "models": {},
    }
    for name in names:
        batch_size = args.batch_size or MODELS[name][2]
        steps = args.steps or (3 if name == "resnet18" else 10)
        print(f"{name}: batch {batch_size}, {args.rounds} rounds of {steps} steps ...", flush=True)
        results["models"][name] = bench_model(
            name, batch_size, steps, args.rounds, torch_threads if use_torch else 0, peak, args.bfloat16,
            torch_device,
        )  # fmt: skip
        results["models"][name]["steps"] = steps
        _write(results, args.out)  # after every model, so a long run that is cut off keeps what it measured
        for peer, p in results["models"][name]["peers"].items():
            train_speed, eval_speed = p["train_examples_per_sec"], p["eval_examples_per_sec"]
            print(f"  {peer:12s} train {train_speed:9,.0f} ex/s  eval {eval_speed:9,.0f} ex/s")
    if args.loop_steps:
        log_every = max(args.loop_steps // 4, 1)
        results["loop"] = bench_loop(args.batch_size or 128, args.loop_steps, log_every)
    machine = results["machine"]
    threads = f"; torch with {torch_threads} threads" if use_torch else ""
    print(
        f"\n{machine['cpu']}, {machine['cores']} cores; JAX on {', '.join(sorted(set(machine['devices'])))}; "
        f"float32 matmul peak "
        f"{machine['matmul_peak_gflops']:.0f} GFLOP/s; medians of {args.rounds} rounds{threads}\n"
        f"XLA_FLAGS={machine['xla_flags']!r} (every JAX peer runs under them)\n"
        f"jaxcnn.configure_cpu() made: {'; '.join(machine['configure_cpu']) or 'nothing'}\n"
    )
    print(table(results))
    _write(results, args.out)
    print(f"\nwrote {args.out}")
    return results


def _write(results: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
