"""Per-layer timings of every CPU convolution lowering: the measurements behind `conv_impl`'s "auto" rule.

    .venv/bin/python experiments/conv_paths.py                 # all layers, ~2 min on 2 cores
    .venv/bin/python experiments/conv_paths.py --layers resnet20

For each layer (those of lenet5, simple_cnn, compact, resnet20 and resnet18, plus a few probes), float32,
milliseconds, best of `--repeats`: "train" is the forward pass and the gradients of a non-linear loss
(wrt the kernel only for a network's first layer, whose input needs none), "eval" the forward pass alone,
on each lowering of `jaxcnn.functional.conv` (its `impl` argument), and on PyTorch's `conv2d` (eager, as
many threads as cores) when torch is installed; the lowerings and PyTorch alternate within each round.
The last column is the lowering "auto" picks. The tables in docs/conv-lowerings.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn import functional as F
from jaxcnn.functional import _cpu_paths

try:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
except ImportError:
    torch = None

PATHS = ("onednn", "xla", "im2col", "im2col_grad", "tap_grad")
# name: (batch, input size, C_in, C_out, window, padding, stride, first layer)
LAYERS = {
    "lenet5 conv1": (128, 28, 1, 6, 5, 2, 1, True),
    "lenet5 conv2": (128, 14, 6, 16, 5, 0, 1, False),
    "simple_cnn conv1": (128, 28, 1, 32, 3, 1, 1, True),
    "simple_cnn conv2": (128, 14, 32, 64, 3, 1, 1, False),
    "compact 28x28 24->24": (128, 28, 24, 24, 3, 1, 1, False),
    "compact 14x14 40->40": (128, 14, 40, 40, 3, 1, 1, False),
    "compact 7x7 64->64": (128, 7, 64, 64, 3, 1, 1, False),
    "resnet20 stem": (128, 32, 3, 16, 3, 1, 1, True),
    "resnet20 32x32 16->16": (128, 32, 16, 16, 3, 1, 1, False),
    "resnet20 16->32 /2": (128, 32, 16, 32, 3, 1, 2, False),
    "resnet20 16x16 32->32": (128, 16, 32, 32, 3, 1, 1, False),
    "resnet20 32->64 /2": (128, 16, 32, 64, 3, 1, 2, False),
    "resnet20 8x8 64->64": (128, 8, 64, 64, 3, 1, 1, False),
    "resnet18 stem (batch 8)": (8, 224, 3, 64, 7, 3, 2, True),
    "resnet18 56x56 64->64 (batch 8)": (8, 56, 64, 64, 3, 1, 1, False),
    "resnet18 7x7 512->512 (batch 8)": (8, 7, 512, 512, 3, 1, 1, False),
    "probe 28x28 8->32": (128, 28, 8, 32, 3, 1, 1, False),
    "probe 16x16 32->32 (batch 512)": (512, 16, 32, 32, 3, 1, 1, False),
}


def seconds(fn) -> float:
    started = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - started


def time_layer(spec, repeats: int) -> dict:
    """{path: (train ms, eval ms)}, the best of `repeats` rounds that run every path in turn, and "auto"."""
    batch, size, c_in, c_out, window, padding, stride, first = spec
    x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))
    kernel = 0.1 * jax.random.normal(jax.random.key(1), (window, window, c_in, c_out))
    runs = {}
    for path in PATHS:
        conv = lambda x, k, path=path: F.conv(x, k, stride=stride, padding=padding, impl=path)
        loss = lambda x, k, conv=conv: jnp.sum(jnp.sin(conv(x, k)))
        train = jax.jit(jax.grad(loss, argnums=(1,) if first else (0, 1)))
        evaluate = jax.jit(conv)
        runs[path] = (lambda f=train: f(x, kernel), lambda f=evaluate: f(x, kernel))
        for fn in runs[path]:
            seconds(fn)  # compiled
    if torch is not None:
        runs["torch"] = torch_runs(x, kernel, stride, padding, first)
    best = {name: [float("inf")] * 2 for name in runs}
    for _ in range(repeats):  # the lowerings alternate, so a slow phase of a shared host hits them all
        for name, fns in runs.items():
            best[name] = [min(b, 1e3 * seconds(fn)) for b, fn in zip(best[name], fns)]
    out_sizes = F.conv_output_shape(x.shape, kernel.shape, stride=stride, padding=padding)[1:-1]
    return {**best, "auto": _cpu_paths.conv_impl("auto", kernel.shape, 1, batch, out_sizes, x.dtype)}


def torch_runs(x, kernel, stride, padding, first):
    """PyTorch's train and eval steps for the same layer (NCHW, OIHW) and loss."""
    x = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(not first)
    kernel = torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy()).requires_grad_()
    conv = lambda: torch.nn.functional.conv2d(x, kernel, stride=stride, padding=padding)

    def train():
        torch.sin(conv()).sum().backward()

    def evaluate():
        with torch.no_grad():
            conv()

    train(), evaluate()  # one-off allocations
    return train, evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", default="", help="only layers whose name contains this text")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    jaxcnn.configure_cpu()
    columns = (*PATHS, "torch") if torch is not None else PATHS
    print(f"{'layer':34s}" + "".join(f"{p + ' train/eval':>24s}" for p in columns) + "  auto")
    for name, spec in LAYERS.items():
        if args.layers not in name:
            continue
        timings = time_layer(spec, args.repeats)
        fastest = min(PATHS, key=lambda p: timings[p][0])
        cells = "".join(
            f"{('*' if p == fastest else '') + f'{timings[p][0]:.1f} / {timings[p][1]:.1f}':>24s}"
            for p in columns
        )
        print(f"{name:34s}{cells}  {timings['auto']}", flush=True)
    print(
        f"\n* the fastest train step; milliseconds, best of {args.repeats}, on {jax.devices()[0].device_kind}"
    )


if __name__ == "__main__":
    main()
