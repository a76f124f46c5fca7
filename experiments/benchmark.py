"""Train-step and eval throughput of jaxcnn against the same nets in plain Flax and in PyTorch, eager and
compiled.

    .venv/bin/python experiments/benchmark.py                      # four models, ~15 min on 2 cores
    .venv/bin/python experiments/benchmark.py --models lenet5 --rounds 3 --out /tmp/b.json
    .venv/bin/python experiments/benchmark.py --quick              # smoke test, a minute or two
    python experiments/benchmark.py --models resnet50 --batch-size 256 --bfloat16 \
        --peers 'jaxcnn[bf16],flax[bf16],torch[bf16],torch[compile,bf16]'     # on a GPU

For each model (lenet5 and simple_cnn at 28x28x1, resnet20 at 32x32x3, resnet18 and, on request, resnet50
at 224x224x3 with a smaller batch) it measures, float32, SGD with momentum:
  - `jaxcnn`: the NNX model (`jaxcnn.models.create_nnx`) trained natively by `jaxcnn.training.train_step`,
    jitted, lowering on `impl="auto"` (what `experiments/train.py` runs);
  - `jaxcnn[linen]`: the same architecture as a Linen module (`jaxcnn.models.create`, through
    `models.bridge.LinenModel`), so `jaxcnn / jaxcnn[linen]` compares the two APIs;
  - `jaxcnn[xla]`: the NNX model with `impl="xla"`, i.e. the lowering plain Flax uses, so
    `jaxcnn[xla] / flax` is the cost of the abstraction alone;
  - `flax`: the architecture written with `flax.linen` (nn.Conv, nn.max_pool, nn.BatchNorm, ...),
    same parameter count (asserted), stepped by the same `train_step`;
  - `torch` and `torch[compile]`: PyTorch eager and under `torch.compile` (default mode; a compilation
    that fails, e.g. for want of the C++ compiler Inductor needs on a CPU, leaves that peer out with the
    reason printed), with `torch.set_num_threads(cores)`, when torch is installed, in a process of their
    own (their OpenMP threads and those of jaxcnn's oneDNN would otherwise compete for the cores); on a
    GPU with channels_last tensors and cuDNN's autotuning. `torch best`, in the ratios, is the faster
    of the two in each round.
`--bfloat16` adds the same peers computing in bfloat16 with float32 parameters: `jaxcnn[bf16]` and
`flax[bf16]` (`dtype=bfloat16`; `config.compute.dtype = "bfloat16"`), `torch[bf16]` and
`torch[compile,bf16]` (PyTorch's AMP: `torch.autocast` to bfloat16). `--peers` runs a subset.
The JAX peers share one process and so its settings: the script calls `jaxcnn.configure_cpu()`, which
keeps CPU convolutions and reductions off YNNPACK and has malloc reuse XLA's temporary buffers (see
`jaxcnn/runtime.py`), for plain Flax too. For plain Flax as jaxlib runs it by default, run the script again
with `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution,reduce
MALLOC_ARENA_MAX=16` (any `MALLOC_*` variable keeps configure_cpu off malloc; 16 arenas is glibc's default
on 2 cores, 8 per core).
Peers alternate within each round; speeds (images/s) are medians over rounds and ratios are medians of the
ratios within a round (paired), since the machine is shared and timings swing. Also reported: eval
(forward) throughput, compile time (a JAX peer's two programs, a torch peer's first train and eval calls:
outside the timings), the process's peak RSS after each model, and MFU = FLOPs per example
(`jaxcnn.summary`, x3 for a train step) x images/s / the peak of a measured matmul in the peer's compute
dtype (2048x2048 on a CPU, 8192x8192 on a GPU; float32 at JAX's default precision, TensorFloat-32 on a
GPU). Finally the training loop (`jaxcnn.training.train`, which `train_and_evaluate` runs after
`build_run`, on `synthetic` data) against the bare step, for lenet5: the ratio of their throughputs and
the loop's Python overhead per step.

Writes every figure as JSON to `--out` (default `benchmark.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxcnn
from jaxcnn import models, training
from jaxcnn._files import strict_json, write_atomically

MODELS = {  # name: (image shape, classes, default batch size, default steps per timing)
    "lenet5": ((28, 28, 1), 10, 128, 10),
    "simple_cnn": ((28, 28, 1), 10, 128, 10),
    "resnet20": ((32, 32, 3), 10, 128, 10),
    "resnet18": ((224, 224, 3), 1000, 8, 3),
    "resnet50": ((224, 224, 3), 1000, 8, 3),
}
DEFAULT_MODELS = ("lenet5", "simple_cnn", "resnet20", "resnet18")  # resnet50 on request: minutes on a CPU
LEARNING_RATE, MOMENTUM = 0.01, 0.9
# Peer names. `[bf16]`: computing in bfloat16 with float32 parameters (`config.compute.dtype =
# "bfloat16"`; PyTorch's AMP), added by --bfloat16. The torch peers: (torch.compile, bfloat16).
JAX_PEERS = ("jaxcnn", "jaxcnn[linen]", "jaxcnn[xla]", "flax")
JAX_BF16_PEERS = ("jaxcnn[bf16]", "flax[bf16]")
TORCH_PEERS = {"torch": (False, False), "torch[compile]": (True, False)}
TORCH_BF16_PEERS = {"torch[bf16]": (False, True), "torch[compile,bf16]": (True, True)}
BEST_TORCH = {  # a pseudo-peer: in each round, the faster of eager and compiled PyTorch
    "torch best": ("torch", "torch[compile]"),
    "torch best[bf16]": ("torch[bf16]", "torch[compile,bf16]"),
}
COMPARISONS = (  # (a, b): a's speed over b's, printed where both ran
    ("jaxcnn", "torch"), ("jaxcnn", "torch[compile]"), ("jaxcnn", "torch best"), ("jaxcnn", "flax"),
    ("jaxcnn", "jaxcnn[linen]"), ("jaxcnn[xla]", "flax"), ("jaxcnn[bf16]", "jaxcnn"),
    ("jaxcnn[bf16]", "flax[bf16]"), ("jaxcnn[bf16]", "torch[bf16]"), ("jaxcnn[bf16]", "torch[compile,bf16]"),
    ("jaxcnn[bf16]", "torch best[bf16]"),
)  # fmt: skip
BFLOAT16_PEERS = frozenset(JAX_BF16_PEERS) | frozenset(TORCH_BF16_PEERS)


# ---------------------------------------------------------------- plain Flax versions of the models
# `dtype`: the computation's (None: float32); parameters stay float32, logits are float32.


class FlaxLeNet5(nn.Module):
    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train=False):
        conv, dense = (functools.partial(layer, dtype=self.dtype) for layer in (nn.Conv, nn.Dense))
        x = nn.max_pool(nn.relu(conv(6, (5, 5), padding=2)(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(dense(84)(nn.relu(dense(120)(x))))
        return dense(self.num_classes)(x).astype(jnp.float32)


class FlaxSimpleCNN(nn.Module):
    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train=False):
        conv, dense = (functools.partial(layer, dtype=self.dtype) for layer in (nn.Conv, nn.Dense))
        for features in (32, 64):
            x = nn.avg_pool(nn.relu(conv(features, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.relu(dense(256)(x.reshape(x.shape[0], -1)))
        return dense(self.num_classes)(x).astype(jnp.float32)


class FlaxResidualBlock(nn.Module):
    """A basic block (`bottleneck` False: 3x3, 3x3; `features` out) or a bottleneck (1x1, 3x3 with the
    stride, 1x1 to `4 * features`, torchvision's v1.5), plus the shortcut, then ReLU."""

    features: int
    stride: int
    shortcut: str  # "A": subsample and zero-pad channels, "B": 1x1 conv + BatchNorm
    bottleneck: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train):
        norm = lambda: nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
        )
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        if self.bottleneck:
            out = 4 * self.features
            y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
            y = nn.relu(norm()(conv(self.features, (3, 3), self.stride, padding=1)(y)))
            y = norm()(conv(out, (1, 1))(y))
        else:
            out = self.features
            y = nn.relu(norm()(conv(out, (3, 3), self.stride, padding=1)(x)))
            y = norm()(conv(out, (3, 3), padding=1)(y))
        if self.stride != 1 or x.shape[-1] != out:
            if self.shortcut == "B":
                x = norm()(conv(out, (1, 1), self.stride)(x))
            else:
                x = x[:, :: self.stride, :: self.stride]
                extra = out - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class FlaxResNet(nn.Module):
    stage_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    imagenet_stem: bool
    num_classes: int = 10
    bottleneck: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train=False):
        conv = functools.partial(nn.Conv, self.widths[0], use_bias=False, dtype=self.dtype)
        x = conv((7, 7), 2, padding=3)(x) if self.imagenet_stem else conv((3, 3), padding=1)(x)
        norm = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        x = nn.relu(norm(x))
        if self.imagenet_stem:
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        shortcut = "B" if self.imagenet_stem else "A"
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(size):
                stride = 2 if i > 0 and j == 0 else 1
                x = FlaxResidualBlock(width, stride, shortcut, self.bottleneck, self.dtype)(x, train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x.mean((1, 2))).astype(jnp.float32)


IMAGENET_WIDTHS = (64, 128, 256, 512)
FLAX_MODELS = {  # name: (num_classes, dtype) -> module
    "lenet5": FlaxLeNet5,
    "simple_cnn": FlaxSimpleCNN,
    "resnet20": functools.partial(FlaxResNet, (3, 3, 3), (16, 32, 64), False),
    "resnet18": functools.partial(FlaxResNet, (2, 2, 2, 2), IMAGENET_WIDTHS, True),
    "resnet50": functools.partial(FlaxResNet, (3, 4, 6, 3), IMAGENET_WIDTHS, True, bottleneck=True),
}


# ---------------------------------------------------------------- PyTorch versions (NCHW)


def torch_model(name: str, num_classes: int):
    import torch
    from torch import nn as tnn

    class Block(tnn.Module):
        """A basic block (3x3, 3x3) or a bottleneck (1x1, 3x3 with the stride, 1x1 to 4x), as the Flax one."""

        def __init__(self, cin, width, stride, shortcut, bottleneck):
            super().__init__()
            conv_bn = lambda cin, cout, kernel, stride=1: [
                tnn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                tnn.BatchNorm2d(cout),
            ]
            if bottleneck:
                cout = 4 * width
                layers = [*conv_bn(cin, width, 1), tnn.ReLU(), *conv_bn(width, width, 3, stride), tnn.ReLU(),
                          *conv_bn(width, cout, 1)]  # fmt: skip
            else:
                cout = width
                layers = [*conv_bn(cin, cout, 3, stride), tnn.ReLU(), *conv_bn(cout, cout, 3)]
            self.body, self.cout = tnn.Sequential(*layers), cout
            self.stride, self.extra, self.down = stride, cout - cin, None
            if (stride != 1 or cin != cout) and shortcut == "B":
                self.down = tnn.Sequential(*conv_bn(cin, cout, 1, stride))

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

    def resnet(stage_sizes, widths, imagenet, bottleneck=False):
        if imagenet:
            stem = [tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False), tnn.BatchNorm2d(widths[0]), tnn.ReLU(),
                    tnn.MaxPool2d(3, 2, 1)]  # fmt: skip
        else:
            stem = [tnn.Conv2d(3, widths[0], 3, 1, 1, bias=False), tnn.BatchNorm2d(widths[0]), tnn.ReLU()]
        blocks, cin = [], widths[0]
        for i, (size, width) in enumerate(zip(stage_sizes, widths)):
            for j in range(size):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(Block(cin, width, stride, "B" if imagenet else "A", bottleneck))
                cin = blocks[-1].cout
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
    if name == "resnet18":
        return resnet((2, 2, 2, 2), IMAGENET_WIDTHS, imagenet=True)
    return resnet((3, 4, 6, 3), IMAGENET_WIDTHS, imagenet=True, bottleneck=True)


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
        forward = lambda variables, x: state.apply_fn(variables, x, train=False)
        self.eval_fn = jax.jit(forward).lower(state.variables(), batch["image"]).compile()
        self.compile_seconds = time.perf_counter() - started  # both programs, outside the timings
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
    """The PyTorch model: SGD with momentum on cross-entropy, as the JAX peers, on `device` ("cpu" or
    "cuda"); eager, or under `torch.compile` (`compiled`: the model and its loss, in its default mode);
    float32, or under PyTorch's AMP (`bfloat16`: `torch.autocast` to bfloat16, float32 parameters).

    On a GPU it runs as NVIDIA's examples do: channels_last tensors and cuDNN's autotuning
    (`cudnn.benchmark`, as XLA autotunes its convolutions), float32 matmuls allowed TensorFloat-32 as JAX's
    and cuDNN's default precision is (PyTorch's own default for matmuls is full float32). The first train
    and eval calls (compilation, or eager's one-off allocations) are `compile_seconds`, outside the timings.
    """

    def __init__(self, name, num_classes, image, label, device, compiled, bfloat16):
        import torch

        torch.manual_seed(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        self.torch, self.device = torch, torch.device(device)
        layout = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.model = torch_model(name, num_classes).to(self.device, memory_format=layout)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.forward = torch.compile(self.model) if compiled else self.model
        self.autocast = functools.partial(
            torch.autocast, self.device.type, dtype=torch.bfloat16, enabled=bfloat16
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        nchw = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
        self.x = nchw.to(self.device).contiguous(memory_format=layout)
        self.y = torch.from_numpy(label.astype(np.int64)).to(self.device)
        started = time.perf_counter()
        self.train(1)
        self.eval(1)
        self.compile_seconds = time.perf_counter() - started

    def train(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            with self.autocast():
                loss = self.torch.nn.functional.cross_entropy(self.forward(self.x), self.y)
            loss.backward()
            self.opt.step()
        self._wait()

    def eval(self, steps: int) -> None:
        self.model.eval()
        with self.torch.no_grad(), self.autocast():
            for _ in range(steps):
                self.forward(self.x)
        self._wait()

    def _wait(self) -> None:
        """Until the queued GPU work is done, as `jax.block_until_ready` for the JAX peers (on the CPU,
        eager PyTorch has already finished)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def _serve_torch_peers(connection, variants, threads, *model_args) -> None:
    """The torch process: builds a `TorchPeer` per variant (peer: (compiled, bfloat16)), sends back each
    one's (params, compile seconds), or for a compiled one whose compilation failed the reason, then runs
    the (peer, method, steps) it is sent until None."""
    import torch

    torch.set_num_threads(threads)
    peers, ready = {}, {}
    for peer, (compiled, bfloat16) in variants.items():
        try:
            peers[peer] = TorchPeer(*model_args, compiled=compiled, bfloat16=bfloat16)
        except Exception as error:  # e.g. no C++ compiler for Inductor's CPU code: the other peers still run
            if not compiled:
                raise
            first_line = next(iter(str(error).strip().splitlines()), "")
            ready[peer] = f"torch.compile failed: {type(error).__name__}: {first_line}"
            continue
        ready[peer] = (peers[peer].params, peers[peer].compile_seconds)
    connection.send(ready)
    while (request := connection.recv()) is not None:
        peer, method, steps = request
        getattr(peers[peer], method)(steps)
        connection.send(None)


class TorchProcess:
    """`TorchPeer`s in a process of their own, each driven like the JAX peers through `peers`.

    PyTorch and jaxcnn's oneDNN each bring an OpenMP runtime whose idle threads spin for a while after a
    parallel region: in one process, each library's threads would compete with the other's for the cores.
    The torch peers share theirs, and run one at a time as all peers do.

    Attributes:
      peers: peer name -> `RemoteTorchPeer`, for each variant that was built.
      skipped: peer name -> why it was not (a compiled variant whose compilation failed).
    """

    def __init__(self, variants, name, num_classes, batch, threads, device):
        import multiprocessing

        image, label = np.asarray(batch["image"]), np.asarray(batch["label"])
        self._connection, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve_torch_peers,
            args=(child, variants, threads, name, num_classes, image, label, device),
            daemon=True,
        )
        self._process.start()
        child.close()  # so that a child that died ends `recv` with EOFError instead of a wait
        ready = self._connection.recv()
        self.peers = {
            peer: RemoteTorchPeer(self, peer, *built)
            for peer, built in ready.items()
            if not isinstance(built, str)
        }
        self.skipped = {peer: reason for peer, reason in ready.items() if isinstance(reason, str)}

    def run(self, peer: str, method: str, steps: int) -> None:
        self._connection.send((peer, method, steps))
        self._connection.recv()

    def close(self) -> None:
        self._connection.send(None)
        self._process.join()


class RemoteTorchPeer:
    """One peer of a `TorchProcess`: `train(steps)`, `eval(steps)`, `params`, `compile_seconds`."""

    def __init__(self, process: TorchProcess, peer: str, params: int, compile_seconds: float):
        self.run = functools.partial(process.run, peer)
        self.params, self.compile_seconds = params, compile_seconds

    def train(self, steps: int) -> None:
        self.run("train", steps)

    def eval(self, steps: int) -> None:
        self.run("eval", steps)


# ---------------------------------------------------------------- measurements


def matmul_peak_flops(size: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
    """FLOP/s of a jitted `size`x`size` matmul in `dtype` (at JAX's default precision: TensorFloat-32 for
    float32 on a GPU): the fastest of `repeats`, the peak (a median taken during a slow phase of a shared
    host made MFU exceed 100% later in the run)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
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
    peers: list[str],
    peaks: dict[str, float],
    torch_threads: int = 1,
    torch_device: str = "cpu",
) -> dict:
    """The train and eval throughputs of `peers` (names from JAX_PEERS, JAX_BF16_PEERS, TORCH_PEERS,
    TORCH_BF16_PEERS) on `name`, in `rounds` alternating rounds; the torch peers with `torch_threads`
    threads on `torch_device`, in a process of their own. MFU against `peaks["float32"]`, or
    `peaks["bfloat16"]` for the [bf16] peers. A compiled torch peer that does not compile is left out,
    with the reason in the result's "skipped"."""
    image_shape, num_classes, _, _ = MODELS[name]
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((batch_size, *image_shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, num_classes, batch_size), jnp.int32),
        "mask": jnp.ones((batch_size,), jnp.float32),
    }
    nnx_model = lambda **kwargs: models.create_nnx(
        name, num_classes=num_classes, input_shape=image_shape, rngs=nnx.Rngs(0), **kwargs
    )
    modules = {
        "jaxcnn": nnx_model,
        "jaxcnn[linen]": lambda: models.create(name, num_classes=num_classes),
        "jaxcnn[xla]": lambda: nnx_model(impl="xla"),
        "flax": lambda: FLAX_MODELS[name](num_classes),
        "jaxcnn[bf16]": lambda: nnx_model(dtype=jnp.bfloat16),
        "flax[bf16]": lambda: FLAX_MODELS[name](num_classes, dtype=jnp.bfloat16),
    }
    built = {peer: JaxPeer(modules[peer](), image_shape, batch) for peer in peers if peer in modules}
    torch_variants = {p: v for p, v in (TORCH_PEERS | TORCH_BF16_PEERS).items() if p in peers}
    torch_process, skipped = None, {}
    if torch_variants:
        torch_process = TorchProcess(torch_variants, name, num_classes, batch, torch_threads, torch_device)
        built |= torch_process.peers
        skipped = torch_process.skipped
    for peer, reason in skipped.items():
        print(f"  {peer} skipped: {reason}", flush=True)
    built = {peer: built[peer] for peer in peers if peer in built}  # in the order asked for
    counts = {peer: p.params for peer, p in built.items()}
    if len(set(counts.values())) != 1:
        raise AssertionError(f"{name}: parameter counts differ between peers: {counts}")
    flops = jaxcnn.summary(models.create(name, num_classes=num_classes), image_shape).total_flops
    for p in built.values():  # warm up caches and allocators outside the timed rounds
        p.train(1)
        p.eval(1)
    train, evals = {k: [] for k in built}, {k: [] for k in built}
    order = list(built)
    try:
        for r in range(rounds):
            rotated = order[r % len(order) :] + order[: r % len(order)]
            for peer in rotated:
                train[peer].append(throughput(built[peer].train, steps, batch_size))
            for peer in rotated:
                evals[peer].append(throughput(built[peer].eval, steps, batch_size))
    finally:
        if torch_process is not None:
            torch_process.close()
    result = {
        "image_shape": image_shape,
        "batch_size": batch_size,
        "params": next(iter(counts.values())),
        "flops_per_example": flops,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peers": {},
        "skipped": skipped,
    }
    for peer, p in built.items():
        train_speed, eval_speed = statistics.median(train[peer]), statistics.median(evals[peer])
        peak = peaks["bfloat16" if peer in BFLOAT16_PEERS else "float32"]
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


def peer_rounds(peers: dict, peer: str, kind: str) -> list[float] | None:
    """`peer`'s speeds per round for `kind` ("train" or "eval"); for a BEST_TORCH pseudo-peer the faster
    of its two in each round; None where it did not run."""
    if peer in BEST_TORCH:
        both = [peer_rounds(peers, p, kind) for p in BEST_TORCH[peer]]
        return None if None in both else [max(pair) for pair in zip(*both, strict=True)]
    return peers[peer][f"{kind}_rounds"] if peer in peers else None


def table(results: dict) -> str:
    header = ("model", "peer", "train img/s", "eval img/s", "compile s", "train MFU", "eval MFU")
    lines = [header]
    for name, r in results["models"].items():
        for peer, p in r["peers"].items():
            lines.append((
                name, peer, f"{p['train_examples_per_sec']:,.0f}", f"{p['eval_examples_per_sec']:,.0f}",
                f"{p['compile_seconds']:.1f}", f"{p['train_mfu']:.1%}", f"{p['eval_mfu']:.1%}",
            ))  # fmt: skip
    ratios = [("model", "batch", "ratio (paired)", "train", "eval")]
    for name, r in results["models"].items():
        for a, b in COMPARISONS:
            pairs = [
                (peer_rounds(r["peers"], a, k), peer_rounds(r["peers"], b, k)) for k in ("train", "eval")
            ]
            if all(x is not None and y is not None for x, y in pairs):
                ratios.append(
                    (name, str(r["batch_size"]), f"{a}/{b}", *(f"{paired_ratio(*xy):.2f}x" for xy in pairs))
                )
    out = [_render(lines), "", _render(ratios), ""]
    out += [f"{name}: peak RSS {r['peak_rss_mib']:,.0f} MiB" for name, r in results["models"].items()]
    out += [
        f"{name}: {peer} skipped: {reason}"
        for name, r in results["models"].items()
        for peer, reason in r["skipped"].items()
    ]
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
        "--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, from {', '.join(MODELS)}"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: 128 (resnet18, resnet50: 8)")
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per timed run (0: 10, resnet18 and resnet50: 3)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; figures are medians")
    parser.add_argument(
        "--loop-steps", type=int, default=200, help="steps of the training-loop run (0: skip)"
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    parser.add_argument(
        "--bfloat16",
        action="store_true",
        help=f"add the peers computing in bfloat16 (float32 parameters): "
        f"{', '.join([*JAX_BF16_PEERS, *TORCH_BF16_PEERS])}",
    )
    parser.add_argument(
        "--peers", default="", help="comma-separated: run only these peers (default: every one available)"
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
    # Looked up, not imported: torch runs in a process of its own (`TorchProcess`).
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    available = [
        *JAX_PEERS, *(JAX_BF16_PEERS if args.bfloat16 else ()),
        *(TORCH_PEERS if use_torch else ()), *(TORCH_BF16_PEERS if use_torch and args.bfloat16 else ()),
    ]  # fmt: skip
    peers = [p.strip() for p in args.peers.split(",") if p.strip()] or available
    unavailable = [p for p in peers if p not in available]
    if unavailable:
        parser.error(
            f"--peers: {', '.join(unavailable)} not available in this run (the [bf16] peers need --bfloat16, "
            f"the torch peers torch); available: {', '.join(available)}"
        )
    if args.quick:
        names = names if args.models != ",".join(DEFAULT_MODELS) else ["lenet5"]
        args.batch_size, args.steps, args.rounds, args.loop_steps = args.batch_size or 16, 2, 1, 4
    torch_threads = args.torch_threads or os.cpu_count() or 1
    torch_device = args.torch_device or ("cuda" if jax.default_backend() == "gpu" else "cpu")
    # A GPU's peak needs a larger product than a CPU's (8192: ~1.4 ms at an H100's bfloat16 peak).
    size = 512 if args.quick else 8192 if jax.default_backend() == "gpu" else 2048
    peaks = {"float32": matmul_peak_flops(size)}
    if args.bfloat16:
        peaks["bfloat16"] = matmul_peak_flops(size, jnp.bfloat16)
    results = {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),  # configure_cpu() adds one, see jaxcnn/runtime.py
            "configure_cpu": cpu_settings,
            "matmul_peak_gflops": round(peaks["float32"] / 1e9, 1),
            "matmul_peak_gflops_bf16": round(peaks["bfloat16"] / 1e9, 1) if args.bfloat16 else None,
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
        steps = args.steps or MODELS[name][3]
        print(f"{name}: batch {batch_size}, {args.rounds} rounds of {steps} steps ...", flush=True)
        results["models"][name] = bench_model(
            name, batch_size, steps, args.rounds, peers, peaks, torch_threads, torch_device
        )
        results["models"][name]["steps"] = steps
        _write(results, args.out)  # after every model, so a long run that is cut off keeps what it measured
        for peer, p in results["models"][name]["peers"].items():
            train_speed, eval_speed = p["train_examples_per_sec"], p["eval_examples_per_sec"]
            print(f"  {peer:19s} train {train_speed:9,.0f} img/s  eval {eval_speed:9,.0f} img/s", flush=True)
    if args.loop_steps:
        log_every = max(args.loop_steps // 4, 1)
        results["loop"] = bench_loop(args.batch_size or 128, args.loop_steps, log_every)
    machine = results["machine"]
    threads = f"; torch with {torch_threads} threads on {torch_device}" if use_torch else ""
    bf16_peak = f", bfloat16 {peaks['bfloat16'] / 1e9:,.0f}" if args.bfloat16 else ""
    print(
        f"\n{machine['cpu']}, {machine['cores']} cores; JAX on {', '.join(sorted(set(machine['devices'])))}; "
        f"matmul peak float32 {peaks['float32'] / 1e9:,.0f}{bf16_peak} GFLOP/s; medians of {args.rounds} "
        f"rounds{threads}\n"
        f"XLA_FLAGS={machine['xla_flags']!r} (every JAX peer runs under them)\n"
        f"jaxcnn.configure_cpu() made: {'; '.join(machine['configure_cpu']) or 'nothing'}\n"
    )
    print(table(results))
    _write(results, args.out)
    print(f"\nwrote {args.out}")
    return results


def _write(results: dict, path: str) -> None:
    write_atomically(path, strict_json(results, indent=2), durable=False)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
