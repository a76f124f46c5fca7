"""ONNX artifacts, converted by jax2onnx (the maintained JAX/Flax converter), run by onnxruntime and any
other ONNX runtime.

    session = onnxruntime.InferenceSession("model.onnx")
    logits = session.run(None, {"images": images})[0]   # (N, H, W, C) float32, normalized as model.json says

jax2onnx pins `orbax-checkpoint<0.11.37`, which jaxcnn's own `orbax-checkpoint>=0.12` excludes, so it lives
in a separate tool environment, `.venv-export` (made by `bash setup.sh export`): where jax2onnx is not
importable, a zoo model is rebuilt there from its recipe (`servable.ZooRecipe`) and converted, in a
subprocess: `python -m jaxcnn.export.onnx REQUEST OUT`. Running an artifact needs only onnxruntime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._validate import choice, integer
from jaxcnn.export.servable import Servable, ServingInfo, from_zoo
from jaxcnn.export.stablehlo import check_options, input_spec, write_artifact

FORMAT = "onnx"
LAYOUTS = ("NHWC", "NCHW")
MIN_OPSET = 18  # jax2onnx writes ReduceMean's axes as an input: opset 18's form
INPUT_NAME, OUTPUT_NAME = "images", "logits"
UNSUPPORTED_STATUS = 3  # the tool's exit status for a model jax2onnx cannot convert


def tool_python() -> Path:
    """The Python of the tool environment that holds jax2onnx: `$JAXCNN_EXPORT_PYTHON`, or `.venv-export`
    beside jaxcnn's source (made by `bash setup.sh export`)."""
    configured = os.environ.get("JAXCNN_EXPORT_PYTHON")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / ".venv-export" / "bin" / "python"


def converter_available() -> bool:
    """Whether ONNX export can run here: jax2onnx in this environment, or the tool environment."""
    return importlib.util.find_spec("jax2onnx") is not None or tool_python().is_file()


@contextlib.contextmanager
def _static_shapes():
    """`jnp.shape` as JAX defines it, numpy's: jax2onnx replaces it by a traced ONNX Shape op while it traces
    (for sizes only known at run time), which the zoo's input checks (`min(H, W) < min_size`) cannot
    compare; the sizes they read are static, the batch size is the only dynamic one."""
    patched, backend = jnp.shape, jax.default_backend
    jnp.shape = np.shape
    jax.default_backend = lambda: "portable"
    try:
        yield
    finally:
        jnp.shape, jax.default_backend = patched, backend


def _attribute(node, name: str, default: list[int]) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def _channels_first_max_pools(graph) -> None:
    """Rewrites, in place, jax2onnx's max pools over channels-last maps into ONNX's own layout.

    jax2onnx lowers `lax.reduce_window_max` on `(N, H, W, C)` as a 4-d MaxPool of window `(1, kH, kW, 1)` on
    the map unsqueezed to `(1, 1, N, H, W, C)`, which onnxruntime refuses ("Unsupported pooling size": it
    pools 1 to 3 dims). The same pool on `(N, C, H, W)` between two Transposes is what ONNX defines.
    """
    import onnx

    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}  # a tensor's name -> the nodes (onnx.NodeProto) that read it
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes = list(graph.node)
    for pool in [n for n in nodes if n.op_type == "MaxPool" and len(_attribute(n, "kernel_shape", [])) == 4]:
        inner, (squeeze,) = producers[pool.input[0]], consumers[pool.output[0]]
        outer = producers[inner.input[0]]
        kernel, strides = _attribute(pool, "kernel_shape", []), _attribute(pool, "strides", [1] * 4)
        pads, dilations = _attribute(pool, "pads", [0] * 8), _attribute(pool, "dilations", [1] * 4)
        if (kernel[0], kernel[3], strides[0], strides[3], dilations[0], dilations[3]) != (1,) * 6 or any(
            pads[i] for i in (0, 3, 4, 7)
        ):
            raise ValueError(f"a max pool of window {kernel} over the batch or channels has no ONNX MaxPool")
        if {inner.op_type, outer.op_type, squeeze.op_type} != {"Unsqueeze", "Squeeze"}:
            raise ValueError(f"unexpected max pool pattern from jax2onnx around {pool.name}")
        name = pool.name
        replacement = [
            onnx.helper.make_node("Transpose", [outer.input[0]], [f"{name}_nchw"], perm=[0, 3, 1, 2]),
            onnx.helper.make_node(
                "MaxPool",
                [f"{name}_nchw"],
                [f"{name}_pooled"],
                name=name,
                kernel_shape=kernel[1:3],
                strides=strides[1:3],
                pads=[pads[1], pads[2], pads[5], pads[6]],
                dilations=dilations[1:3],
            ),
            onnx.helper.make_node("Transpose", [f"{name}_pooled"], [squeeze.output[0]], perm=[0, 2, 3, 1]),
        ]
        at = nodes.index(pool)
        nodes[at : at + 1] = replacement
        for node in (outer, inner, squeeze):
            if node is outer and len(consumers[outer.output[0]]) > 1:
                continue
            nodes.remove(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]  # the Unsqueezes' axes go
    del graph.initializer[:]
    graph.initializer.extend(kept)


def convert(servable: Servable, info: ServingInfo, opset: int) -> bytes:
    """The serialized ONNX model of `servable` as `info` says (dtype, raw images, batch, layout), checked by
    `onnx.checker`. Needs jax2onnx (and onnx) in this environment."""
    import onnx
    from jax2onnx import to_onnx

    forward = servable.forward(info.dtype, info.raw_images)

    def traced(images):
        with _static_shapes():
            return forward(images)

    try:
        proto = to_onnx(
            traced,
            [input_spec(info)],
            opset=opset,
            model_name=info.model or "jaxcnn_model",
            inputs_as_nchw=[0] if info.layout == "NCHW" else None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
        )
    except NotImplementedError as error:  # an operation jax2onnx has no ONNX for
        raise ValueError(
            f"model {info.model or type(servable.model).__name__} has no ONNX form: {error}"
        ) from None
    _channels_first_max_pools(proto.graph)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _convert_in_tool_environment(servable: Servable, info: ServingInfo, opset: int) -> bytes:
    python = tool_python()
    if not python.is_file():
        raise ValueError(
            "ONNX export needs jax2onnx, which is neither installed here nor in the tool environment "
            f"{python.parents[1]}: run `bash setup.sh export` (or set JAXCNN_EXPORT_PYTHON)"
        )
    if servable.recipe is None:
        raise ValueError(
            "jax2onnx runs in the tool environment, which rebuilds zoo models by name: export a workdir, a "
            "checkpoint or export.from_zoo(...), or install jax2onnx beside this model's code"
        )
    with tempfile.TemporaryDirectory(prefix="jaxcnn-onnx-") as directory:
        request, out = Path(directory) / "request.pickle", Path(directory) / "model.onnx"
        request.write_bytes(pickle.dumps({"recipe": servable.recipe, "info": info, "opset": opset}))
        done = subprocess.run(
            [str(python), "-m", "jaxcnn.export.onnx", str(request), str(out)], capture_output=True, text=True
        )
        if done.returncode == UNSUPPORTED_STATUS:
            raise ValueError(done.stderr.strip().splitlines()[-1])
        if done.returncode != 0:
            raise RuntimeError(f"jax2onnx failed in {python}:\n{done.stderr[-4000:]}")
        return out.read_bytes()


def export_onnx(
    servable: Servable,
    path: str | os.PathLike,
    *,
    batch: int | None = None,
    dtype: str = "float32",
    raw_images: bool = False,
    layout: str = "NHWC",
    opset: int = MIN_OPSET,
) -> ServingInfo:
    """Converts `servable`'s model to ONNX with jax2onnx, written to `path`, its `ServingInfo` beside it.

    Args:
      batch: a fixed batch size; None (default): any (a dynamic dimension).
      dtype: "float32" only: onnxruntime's CPU kernels lack most bfloat16 operators.
      raw_images: the model takes uint8 pixels and normalizes them as the run's data pipeline does.
      layout: the input's, "NHWC" (jaxcnn's) or "NCHW" (transposed inside the model, for serving stacks
        that send PyTorch's layout).
      opset: the ONNX opset, at least 17.

    Returns:
      The `ServingInfo` written beside the artifact.

    Raises:
      ValueError: a bad or unsupported option (named), or no jax2onnx here or in the tool environment,
        before anything is written.
      RuntimeError: the conversion failed in the tool environment (its error output is in the message).
    """
    path = check_options(path, batch, dtype)
    if dtype != "float32":
        raise ValueError(f"dtype {dtype!r} is not supported by the ONNX export (float32 only)")
    choice(layout, "layout", LAYOUTS)
    integer(opset, "opset", minimum=MIN_OPSET)
    info = dataclasses.replace(
        servable.info, dtype=dtype, raw_images=raw_images, batch=batch, format=FORMAT, layout=layout
    )
    servable.forward(dtype, raw_images)  # refuses raw_images without a normalization, before converting
    if importlib.util.find_spec("jax2onnx") is not None:
        payload = convert(servable, info, opset)
    else:
        payload = _convert_in_tool_environment(servable, info, opset)
    write_artifact(path, payload, info)
    return info


def _tool_main(request_path: str, out_path: str) -> None:
    """In the tool environment: rebuilds the requested zoo model and writes its ONNX bytes to `out_path`."""
    request = pickle.loads(Path(request_path).read_bytes())
    recipe, info = request["recipe"], request["info"]
    servable = from_zoo(
        recipe.name,
        recipe.variables,
        input_shape=info.input_shape,
        num_classes=recipe.num_classes,
        class_names=info.class_names,
        mean=info.mean,
        std=info.std,
        **recipe.kwargs,
    )
    try:
        payload = convert(servable, info, request["opset"])
    except ValueError as error:  # the model has no ONNX form: the caller raises it as its own ValueError
        print(error, file=sys.stderr)
        raise SystemExit(UNSUPPORTED_STATUS) from None
    Path(out_path).write_bytes(payload)


if __name__ == "__main__":
    _tool_main(*sys.argv[1:])
