"""conv_transpose (the transpose of jaxcnn's conv) against `jax.lax.conv_transpose`, in paired rounds.

    python experiments/conv_transpose_speed.py [--rounds 7]

Forward and forward+backward of a U-Net-like upsampling (2x2 stride-2 and 3x3 stride-2 padding-1 kernels),
jitted, float32, on this machine's default device. Prints the median of per-round ratios (jaxcnn / lax):
below 1 means jaxcnn is faster. Rounds alternate the two, so a shared machine's load hits both alike.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxcnn
from jaxcnn import functional as F

CASES = {  # name: (x shape, kernel shape (*window, C_out, C_in), stride, jaxcnn padding, lax padding)
    "2x2 s2 64->32 on 16x16": ((32, 16, 16, 64), (2, 2, 32, 64), 2, 0, "VALID"),
    "3x3 s2 SAME 64->32 on 16x16": ((32, 16, 16, 64), (3, 3, 32, 64), 2, "SAME", "SAME"),
}


def timed(fn, *args) -> float:
    started = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - started


def pair(stride, padding, lax_padding):
    """(jaxcnn's, lax's) transposed convolution of `(x, k)`: the same function."""
    ours = lambda x, k: F.conv_transpose(x, k, stride=stride, padding=padding)
    theirs = lambda x, k: lax.conv_transpose(
        x, k, (stride, stride), lax_padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True
    )
    return ours, theirs


def with_backward(fn):
    return jax.grad(lambda x, k: jnp.sum(fn(x, k) ** 2), argnums=(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    jaxcnn.configure_cpu()
    rng = np.random.default_rng(0)
    for name, (x_shape, k_shape, stride, padding, lax_padding) in CASES.items():
        x, k = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x_shape, k_shape))
        ours, theirs = pair(stride, padding, lax_padding)
        np.testing.assert_allclose(ours(x, k), theirs(x, k), rtol=1e-4, atol=1e-4)
        for mode, wrap in (("forward", lambda f: f), ("forward+backward", with_backward)):
            a, b = jax.jit(wrap(ours)), jax.jit(wrap(theirs))
            timed(a, x, k), timed(b, x, k)  # compile
            ratios = []
            for _ in range(rounds):
                ratios.append(sum(timed(a, x, k) for _ in range(3)) / sum(timed(b, x, k) for _ in range(3)))
            print(f"{name:30s} {mode:17s} jaxcnn/lax median {np.median(ratios):.2f} "
                  f"(rounds {min(ratios):.2f}..{max(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
