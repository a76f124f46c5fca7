"""Activation memory of a train step with and without `compute.remat` (`nnx.remat` per block).

    .venv/bin/python experiments/remat_memory.py [--model resnet50 --image 224 --batch_size 8]

Builds the model as `experiments/train.py` does, once with each setting, and prints, computing nothing:
  - residuals: the bytes the forward pass keeps for the backward pass (the leaves of `jax.vjp`'s backward
    function of the training loss, under `jax.eval_shape`), what remat cuts on every backend;
  - XLA's compiled memory analysis of jaxcnn's train step (`training.train_step`, SGD with Nesterov
    momentum; `jax.jit(...).lower(...).compile().memory_analysis()`) on this machine's backend: temp bytes
    (scratch buffers, the kept activations among them), arguments (train state and batch) and outputs.
On XLA:CPU the two compiled steps are the same: XLA:CPU drops the optimization barriers that keep JAX's
recomputation apart from the forward pass and merges the two, so its temp bytes do not move; GPU and TPU
compilers keep them, and there the residuals are what the step holds.
"""

from __future__ import annotations

import argparse
import time


def measure(model: str, image: int, batch_size: int, dtype: str, remat: bool) -> dict[str, float]:
    """MiB of residuals, temp, arguments and outputs of the train step, and its compile seconds."""
    import jax
    import jax.numpy as jnp

    from jaxcnn.training import (
        ComputeSettings,
        create_model,
        create_optimizer,
        create_train_state,
        cross_entropy_loss,
        train_step,
    )

    image_shape = (image, image, 3)
    net = create_model(model, 1000, image_shape, seed=0, compute=ComputeSettings(dtype=dtype, remat=remat))
    state = create_train_state(net, create_optimizer("nesterov", 0.1, total_steps=100))
    batch = {
        "image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((batch_size,), jnp.float32),
    }

    def loss(params, images, labels):
        logits, _ = state.apply_fn(
            state.variables(params), images, train=True, rngs={"dropout": state.rng}, mutable=["batch_stats"]
        )
        return cross_entropy_loss(logits, labels).mean()

    def backward(params, images, labels):
        return jax.vjp(lambda p: loss(p, images, labels), params)[1]

    residuals = jax.eval_shape(backward, state.params, batch["image"], batch["label"])
    start = time.perf_counter()
    memory = jax.jit(train_step).lower(state, batch).compile().memory_analysis()
    seconds = time.perf_counter() - start
    sizes = {
        "residuals": sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(residuals)),
        "temp": memory.temp_size_in_bytes,
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
    }
    return {**{name: size / 2**20 for name, size in sizes.items()}, "compile s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image", type=int, default=224, help="image side")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", help="compute.dtype")
    args = parser.parse_args()
    import jax

    side = args.image
    print(f"{args.model} at {side}x{side}x3, batch {args.batch_size}, {args.dtype}, {jax.devices()[0]}")
    rows = {remat: measure(args.model, side, args.batch_size, args.dtype, remat) for remat in (False, True)}
    columns = ["residuals", "temp", "arguments", "outputs"]
    print("| compute.remat | " + " | ".join(f"{c} MiB" for c in columns) + " | compile s |")
    print("| --- |" + " ---: |" * (len(columns) + 1))
    for remat, row in rows.items():
        print(
            f"| {remat} | " + " | ".join(f"{row[c]:,.1f}" for c in columns) + f" | {row['compile s']:.0f} |"
        )
    for c in ("residuals", "temp"):
        print(f"{c} with remat: {rows[True][c] / rows[False][c]:.2f}x of without")


if __name__ == "__main__":
    main()
