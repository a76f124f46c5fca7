"""`compute.remat`: `nnx.remat` per block gives the same gradients and statistics from fewer residuals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import models
from jaxcnn.training import ComputeSettings, create_model, create_optimizer, create_train_state
from jaxcnn.training.steps import cross_entropy_loss

# Small members of each family of blocks: residual ones under BatchNorm (CIFAR ResNet), the inverted
# residuals `outputs_of` calls (MobileNetV2), blocks that draw Dropout masks (WideResNet), dense layers.
SMALL = {
    "resnet20": {"depth": 8, "widths": (4, 8, 8)},
    "mobilenet_v2": {"width_multiplier": 0.25, "inverted_residual_setting": ((1, 8, 1, 1), (2, 8, 2, 2))},
    "wrn16_4": {"depth": 10, "width": 1, "dropout": 0.3},
    "densenet_bc_100_12": {"growth_rate": 2, "block_config": (2, 2), "num_init_features": 4},
}


def _gradients_and_residuals(name: str, remat: bool):
    """Gradients of the training loss on a fixed batch, the BatchNorm statistics the step leaves, and
    the bytes the forward pass keeps for the backward pass (the leaves of `jax.vjp`'s backward function)."""
    compute = ComputeSettings(remat=remat)
    model = create_model(name, 3, (8, 8, 3), seed=0, compute=compute, model_kwargs=SMALL[name])
    state = create_train_state(model, create_optimizer("sgd", 0.1, 10))
    images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    labels = jnp.arange(4) % 3

    def loss(params):
        logits, updates = state.apply_fn(
            state.variables(params), images, train=True, rngs={"dropout": state.rng}, mutable=["batch_stats"]
        )
        return cross_entropy_loss(logits, labels).mean(), updates

    def gradients(params):
        _, backward, updates = jax.vjp(loss, params, has_aux=True)
        return backward(jnp.ones(()))[0], updates

    backward = jax.eval_shape(lambda p: jax.vjp(loss, p, has_aux=True)[1], state.params)
    kept = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(backward))
    return jax.jit(gradients)(state.params), kept


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n == "resnet20" else pytest.mark.slow) for n in SMALL]
)
def test_remat_gives_the_same_gradients_and_statistics_from_fewer_residuals(name):
    (grads, stats), kept = _gradients_and_residuals(name, remat=False)
    (remat_grads, remat_stats), remat_kept = _gradients_and_residuals(name, remat=True)
    for expected, actual in zip(jax.tree.leaves((grads, stats)), jax.tree.leaves((remat_grads, remat_stats))):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
    assert remat_kept < kept / 2


def test_compute_remat_reaches_the_model_and_is_refused_by_one_without_blocks():
    remat = ComputeSettings(remat=True)
    model = create_model("resnet20", 10, (8, 8, 3), seed=0, compute=remat, model_kwargs=SMALL["resnet20"])
    assert model.remat is True
    with pytest.raises(ValueError, match="config.compute.remat: model 'lenet5' has no blocks to recompute"):
        create_model("lenet5", 10, (28, 28, 1), seed=0, compute=remat)


def test_remat_must_be_a_bool():
    with pytest.raises(TypeError, match="remat must be True or False, got 1"):
        ComputeSettings(remat=1)
    with pytest.raises(TypeError, match="remat must be True or False, got 'yes'"):
        models.create_nnx("resnet20", remat="yes", rngs=nnx.Rngs(0))
