"""Issue 21's layers in both module APIs: ConvTranspose (against PyTorch's), ConvLocal (against Flax's),
padding modes, the new pooling options, keepdims, and inputs with no or several batch dims."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx
from test_nnx_layers import KEY, _random, check_twin

from jaxcnn import functional as F
from jaxcnn import layers
from jaxcnn import nnx_layers as L


def test_conv_transpose_layers_match_torch():
    torch = pytest.importorskip("torch")
    x = _random((2, 5, 4, 4))
    layer = L.ConvTranspose(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2, rngs=nnx.Rngs(0))
    linen = layers.ConvTranspose(6, (3, 2), stride=2, padding=1, output_padding=1, groups=2)
    y, variables = check_twin(layer, linen, x)
    assert layer.kernel.shape == (3, 2, 3, 4)  # (*window, C_out // groups, C_in)
    reference = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2)
    with torch.no_grad():  # PyTorch's (C_in, C_out // groups, *window) weight
        reference.weight.copy_(torch.from_numpy(np.transpose(np.array(layer.kernel[...]), (3, 2, 0, 1))))
        reference.bias.copy_(torch.from_numpy(np.array(variables["params"]["bias"])))
        expected = reference(torch.from_numpy(np.moveaxis(np.array(x), -1, 1))).numpy()
    np.testing.assert_allclose(y, np.moveaxis(expected, 1, -1), rtol=1e-5, atol=1e-5)


def test_conv_local_layers_match_flax():
    x = _random((2, 6, 5, 3))
    layer = L.ConvLocal(3, 4, (3, 2), input_size=(6, 5), stride=(2, 1), padding="SAME", rngs=nnx.Rngs(0))
    y, variables = check_twin(layer, layers.ConvLocal(4, (3, 2), stride=(2, 1), padding="SAME"), x)
    expected = nn.ConvLocal(4, (3, 2), strides=(2, 1), padding="SAME").apply(variables, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape", [(2, 7, 3), (2, 6, 5, 3)], ids=["1d", "2d"])
def test_linen_conv_local_takes_an_int_kernel_size(x_shape):
    """As every other conv layer: an int is the window in every spatial dim of the input (issue 36, 12)."""
    x, window = _random(x_shape), (3,) * (len(x_shape) - 2)
    layer = L.ConvLocal(3, 4, 3, input_size=x_shape[1:-1], rngs=nnx.Rngs(0))
    y, variables = check_twin(layer, layers.ConvLocal(4, 3), x)
    np.testing.assert_allclose(y, nn.ConvLocal(4, window).apply(variables, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "nnx_layer, linen_layer",
    [
        (L.Conv(3, 4, 3, padding=1, padding_mode="reflect", rngs=nnx.Rngs(0)),
         layers.Conv(4, (3, 3), padding=1, padding_mode="reflect")),
        (L.MaxPool(3, 2, 1, dilation=(1, 2), ceil_mode=True),
         layers.MaxPool(3, 2, 1, dilation=(1, 2), ceil_mode=True)),
        (L.MinPool((2, 2), ceil_mode=True), layers.MinPool((2, 2), ceil_mode=True)),
        (L.AvgPool(3, 2, 1, False, ceil_mode=True), layers.AvgPool(3, 2, 1, False, ceil_mode=True)),
        (L.GlobalMaxPool(keepdims=True), layers.GlobalMaxPool(keepdims=True)),
        (L.GlobalAvgPool(keepdims=True), layers.GlobalAvgPool(keepdims=True)),
    ],
)  # fmt: skip
def test_new_layer_options_are_the_functional_calls(nnx_layer, linen_layer):
    x = _random((2, 7, 6, 3))
    y, _ = check_twin(nnx_layer, linen_layer, x)
    expected = {
        L.Conv: lambda: F.conv(
            x, nnx_layer.kernel[...], nnx_layer.bias[...], padding=1, padding_mode="reflect"
        ),
        L.MaxPool: lambda: F.max_pool(x, 3, 2, 1, dilation=(1, 2), ceil_mode=True),
        L.MinPool: lambda: F.min_pool(x, (2, 2), ceil_mode=True),
        L.AvgPool: lambda: F.avg_pool(x, 3, 2, 1, False, ceil_mode=True),
        L.GlobalMaxPool: lambda: x.max((1, 2), keepdims=True),
        L.GlobalAvgPool: lambda: x.mean((1, 2), keepdims=True),
    }[type(nnx_layer)]()
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["Conv", "ConvTranspose", "ConvLocal"])
def test_layers_take_any_batch_shape(name):
    """An unbatched input and two batch dims give the one-batch-dim output, in both APIs."""
    make = {
        "Conv": lambda: (L.Conv(3, 2, (3, 3), stride=2, rngs=nnx.Rngs(0)), layers.Conv(2, (3, 3), stride=2)),
        "ConvTranspose": lambda: (
            L.ConvTranspose(3, 2, (3, 3), stride=2, rngs=nnx.Rngs(0)),
            layers.ConvTranspose(2, (3, 3), stride=2),
        ),
        "ConvLocal": lambda: (
            L.ConvLocal(3, 2, (3, 3), input_size=(5, 5), rngs=nnx.Rngs(0)),
            layers.ConvLocal(2, (3, 3)),
        ),
    }
    layer, linen = make[name]()
    x = _random((6, 5, 5, 3))
    batched = layer(x)
    variables = {"params": nnx.to_pure_dict(nnx.state(layer, nnx.Param))}
    for shape in [(5, 5, 3), (2, 3, 5, 5, 3)]:
        inputs = x.reshape(shape) if len(shape) == 5 else x[0]
        expected = batched.reshape(2, 3, *batched.shape[1:]) if len(shape) == 5 else batched[0]
        np.testing.assert_allclose(layer(inputs), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(linen.apply(variables, inputs), expected, rtol=1e-6, atol=1e-6)
    assert jax.tree.map(np.shape, linen.init(KEY, x[0])) == jax.tree.map(np.shape, variables)


def test_new_layer_errors_name_the_argument():
    with pytest.raises(ValueError, match="padding_mode"):
        L.Conv(3, 4, 3, padding_mode="mirror", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="groups"):
        L.ConvTranspose(3, 4, 3, groups=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="output_padding"):
        layers.ConvTranspose(4, (3, 3), stride=2, output_padding=2).init(KEY, _random((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="kernel_size"):
        L.ConvLocal(3, 4, (3, 3, 3), input_size=(5, 5), rngs=nnx.Rngs(0))


def test_summary_shows_the_transposed_and_ceil_mode_formulas():
    from jaxcnn import summary

    class Model(nnx.Module):
        def __init__(self):
            self.pool = L.MaxPool(3, 2, 1, ceil_mode=True)
            self.up = L.ConvTranspose(1, 2, 3, stride=2, padding=1, output_padding=1, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.up(self.pool(x))

    rows = {row.kind: row for row in summary(Model(), (8, 8, 1)).rows}
    assert rows["MaxPool"].size_formula == "H2 = W2 = ⌈(8 − 3 + 2·1)/2⌉ + 1 = 5"
    # W2 = (W1 − 1)·S − 2P + D·(F − 1) + output_padding + 1
    assert rows["ConvTranspose"].size_formula == "H2 = W2 = (5 − 1)·2 − 2·1 + (3 − 1) + 1 + 1 = 10"
    assert rows["ConvTranspose"].params_formula == "(3·3·2)·1 + 2 = 20"
