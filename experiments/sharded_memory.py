"""Per-device memory of a model's train state, replicated (`parallel="data"`) against sharded (`"fsdp"`).

    python experiments/sharded_memory.py [--model vgg16 --devices 8 --image 224 --classes 1000]

Builds the train state (parameters, SGD-momentum state, BatchNorm statistics) on `--devices` simulated
CPU devices, places it as each strategy does, and prints the bytes each device holds (the largest over
the devices: the shards of the arrays on it), read from the placed arrays themselves.
"""

from __future__ import annotations

import argparse
import os


def _device_bytes(tree) -> dict:
    """Bytes of `tree`'s arrays on each device."""
    import jax

    held = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--image", type=int, default=224, help="image side (VGG-16's 138M parameters: 224)")
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"

    import jax

    import jaxcnn
    from jaxcnn.parallel import create_strategy
    from jaxcnn.training import create_model, create_optimizer, create_train_state

    jaxcnn.configure_cpu()
    model = create_model(args.model, args.classes, (args.image, args.image, 3), seed=0)
    state = create_train_state(model, create_optimizer("momentum", 0.1, 100))
    parts = {"params": state.params, "opt_state": state.opt_state, "batch_stats": state.batch_stats}
    count = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    shape = f"{args.image}x{args.image}x3 images, {args.classes} classes"
    print(f"{args.model}, {shape}: {count / 1e6:.1f}M parameters, {jax.device_count()} devices")
    print("| parallel | params | opt_state | batch_stats | total per device (largest) |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("data", "fsdp"):
        placed = create_strategy(name).put_state(parts)
        sizes = {part: max(_device_bytes(tree).values(), default=0) for part, tree in placed.items()}
        total = max(_device_bytes(placed).values())
        row = " | ".join(f"{sizes[part] / 2**20:,.1f} MiB" for part in parts)
        print(f"| {name} | {row} | {total / 2**20:,.1f} MiB |")
        del placed


if __name__ == "__main__":
    main()
