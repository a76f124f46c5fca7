"""ConvNeXt's and EfficientNet's new ops: layer normalisation against PyTorch and numpy, drop-path's
per-example draws, broadcast dropout, and both module APIs of LayerNorm and DropPath."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import functional as F
from jaxcnn import layers
from jaxcnn import nnx_layers as L

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4, 6)).astype(np.float32) * 3 + 1
SCALE, BIAS = RNG.random(6).astype(np.float32) + 0.5, RNG.standard_normal(6).astype(np.float32)


def test_layer_norm_equals_numpy_and_torch():
    mean, var = X.mean(-1, keepdims=True), X.var(-1, keepdims=True)
    expected = (X - mean) / np.sqrt(var + 1e-6) * SCALE + BIAS
    got = F.layer_norm(X, SCALE, BIAS, epsilon=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    torch = pytest.importorskip("torch")
    reference = torch.nn.functional.layer_norm(
        torch.from_numpy(X), (6,), torch.from_numpy(SCALE), torch.from_numpy(BIAS), eps=1e-6
    )
    np.testing.assert_allclose(got, reference.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(F.layer_norm(X), (X - mean) / np.sqrt(var + 1e-6), rtol=1e-5, atol=1e-5)
    assert F.layer_norm(X.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_layer_norm_names_bad_arguments():
    with pytest.raises(ValueError, match=r"scale must have shape \(C,\) = \(6,\)"):
        F.layer_norm(X, SCALE[:3])
    with pytest.raises(ValueError, match="epsilon"):
        F.layer_norm(X, epsilon=-1.0)


def test_drop_path_keeps_or_drops_whole_examples():
    x = jnp.ones((400, 3, 2, 5))
    y = np.asarray(F.drop_path(x, 0.25, key=jax.random.PRNGKey(0)))
    per_example = y.reshape(400, -1)
    kept = per_example[:, 0] != 0
    assert np.all(per_example[kept] == np.float32(1 / 0.75)) and np.all(per_example[~kept] == 0)
    assert 0.18 < 1 - kept.mean() < 0.32  # about a quarter of the 400 examples dropped
    np.testing.assert_array_equal(F.drop_path(x, 0.25, deterministic=True), x)
    np.testing.assert_array_equal(F.drop_path(x, 0.0), x)


def test_dropout_broadcast_dims_share_one_draw():
    y = np.asarray(F.dropout(jnp.ones((4, 5, 6, 8)), 0.5, key=jax.random.PRNGKey(1), broadcast_dims=(1, 2)))
    assert np.all(y == y[:, :1, :1, :])  # one draw per (example, channel)
    with pytest.raises(ValueError, match="broadcast_dims must be axes of x"):
        F.dropout(jnp.ones((2, 3)), 0.5, key=jax.random.PRNGKey(1), broadcast_dims=(2,))


def test_layer_norm_modules_agree():
    variables = layers.LayerNorm().init(jax.random.PRNGKey(0), X)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"scale": (6,), "bias": (6,)}}
    variables = {"params": {"scale": SCALE, "bias": BIAS}}
    module = L.LayerNorm(6, rngs=nnx.Rngs(0))
    module.scale[...], module.bias[...] = SCALE, BIAS
    np.testing.assert_array_equal(module(X), layers.LayerNorm().apply(variables, X))
    np.testing.assert_array_equal(module(X), F.layer_norm(X, SCALE, BIAS))


def test_drop_path_modules_follow_the_mode():
    x = jnp.ones((64, 2, 2, 3))
    module = L.DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    module.eval()
    np.testing.assert_array_equal(module(x), x)
    module.train()
    y = np.asarray(module(x)).reshape(64, -1)
    assert set(np.unique(y)) == {0.0, 2.0} and np.all(y == y[:, :1])
    linen = layers.DropPath(0.5)
    np.testing.assert_array_equal(linen.apply({}, x, deterministic=True), x)
    z = np.asarray(linen.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)}))
    assert set(np.unique(z)) == {0.0, 2.0} and np.all(z.reshape(64, -1) == z.reshape(64, -1)[:, :1])
