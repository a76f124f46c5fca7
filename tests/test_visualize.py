"""jaxcnn.visualize: what the pictures show is computed right, and every plot draws headless."""

import io
import subprocess
import sys

import flax.linen as nn
import jax
import matplotlib.figure
import numpy as np
import pytest
from flax import nnx

from jaxcnn import data, functional, layers, models, nnx_layers, visualize


@pytest.fixture(scope="module")
def lenet():
    """lenet5 on 12x12 inputs with random parameters (an NNX model, its Linen form and the same
    weights as Linen variables), and a few random images."""
    model = models.create_nnx("lenet5", input_shape=(12, 12, 1), rngs=nnx.Rngs(0))
    images = np.random.default_rng(0).standard_normal((5, 12, 12, 1)).astype(np.float32)
    return model, models.create("lenet5"), models.linen_variables(model), images


def _draws(figure):
    assert isinstance(figure, matplotlib.figure.Figure)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")


def _both_apis(lenet):
    """`(model, variables)` for `visualize`: the NNX model, and its Linen form with the same weights."""
    model, linen, variables, _ = lenet
    return [(model, None), (linen, variables)]


def test_conv_outputs_are_the_conv_layers_in_call_order(lenet):
    *_, images = lenet
    kernel, bias = lenet[0].conv1.kernel[...], lenet[0].conv1.bias[...]
    expected = functional.conv(images, kernel, bias, padding=2)
    for model, variables in _both_apis(lenet):
        outputs = visualize.conv_outputs(model, images, variables=variables)
        assert list(outputs) == ["conv1", "conv2"]
        np.testing.assert_allclose(outputs["conv1"], expected, rtol=1e-5, atol=1e-5)
        assert outputs["conv2"].shape == (5, 2, 2, 16)  # 12 -> 12 -> pool 6 -> 6 - 5 + 1 = 2


def test_first_conv_pairs_the_kernel_with_its_maps(lenet):
    *_, images = lenet
    for model, variables in _both_apis(lenet):
        path, kernel, maps = visualize.first_conv(model, images, variables=variables)
        assert path == "conv1"
        np.testing.assert_array_equal(kernel, lenet[0].conv1.kernel[...])
        assert kernel.shape == (5, 5, 1, 6) and maps.shape == (5, 12, 12, 6)


def test_nested_convolutions_in_eval_mode_leave_the_model_alone():
    model = models.create_nnx("resnet20", input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
    model.train()
    statistics = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
    images = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
    outputs = visualize.conv_outputs(model, images)
    assert list(outputs)[:3] == ["conv1", "layer1_0/conv1", "layer1_0/conv2"] and len(outputs) == 19
    path, kernel, maps = visualize.first_conv(model, images)
    assert path == "conv1" and kernel.shape == (3, 3, 3, 16) and maps.shape == (2, 8, 8, 16)
    assert not model.bn1.use_running_average  # still in train mode, statistics unmoved
    now = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    assert jax.tree.all(jax.tree.map(np.array_equal, now, statistics))
    linen = models.create("resnet20")  # the Linen form, its BatchNorm in eval mode too
    variables = models.linen_variables(model)
    np.testing.assert_array_equal(
        visualize.conv_outputs(linen, images, variables=variables)["layer3_2/conv2"],
        outputs["layer3_2/conv2"],
    )


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(layers.Conv(3, 3)(x))


class _UserLinen(nn.Module):
    """A user's Linen model: its convolutions are found by `nn.intercept_methods`."""

    @nn.compact
    def __call__(self, x, train=False):
        x = _Block()(layers.Conv(2, 3, name="stem")(x))
        return layers.Dense(4)(layers.GlobalAvgPool()(x))


def test_a_users_linen_model_with_nested_convolutions():
    images = np.random.default_rng(2).standard_normal((2, 6, 6, 1)).astype(np.float32)
    variables = _UserLinen().init(jax.random.PRNGKey(0), images)
    assert list(visualize.conv_outputs(_UserLinen(), images, variables=variables)) == [
        "stem",
        "_Block_0/Conv_0",
    ]
    path, kernel, maps = visualize.first_conv(_UserLinen(), images, variables=variables)
    assert path == "stem" and maps.shape == (2, 6, 6, 2)
    np.testing.assert_array_equal(kernel, variables["params"]["stem"]["kernel"])


class _DenseOnly(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return layers.Dense(3)(x)


def test_a_model_without_convolutions_is_a_clear_error():
    x = np.zeros((1, 4, 4, 1), np.float32)
    variables = _DenseOnly().init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="_DenseOnly applies no jaxcnn convolution"):
        visualize.first_conv(_DenseOnly(), x, variables=variables)
    with pytest.raises(ValueError, match="Dense applies no jaxcnn convolution"):
        visualize.first_conv(nnx_layers.Dense(1, 3, rngs=nnx.Rngs(0)), x)


def test_predict_matches_eval_mode_on_every_example_in_order():
    dataset = data.load("digits", "test").take(70)  # 70 = one full batch of 32, one of 32, a padded 6
    model = models.create_nnx("compact", input_shape=(8, 8, 1), rngs=nnx.Rngs(1))  # BatchNorm and Dropout
    model.train()  # predict evaluates anyway
    variables = models.linen_variables(model)
    images = data.normalize(dataset.images, dataset.mean, dataset.std)
    expected = models.create("compact").apply(variables, images, train=False).argmax(-1)
    np.testing.assert_array_equal(visualize.predict(model, dataset, batch_size=32), expected)
    linen = visualize.predict(models.create("compact"), dataset, batch_size=32, variables=variables)
    np.testing.assert_array_equal(linen, expected)
    assert not model.bn1.use_running_average


def test_model_and_variables_are_checked(lenet):
    model, linen, variables, images = lenet
    dataset = data.load("digits", "test").take(4)
    with pytest.raises(
        TypeError, match="variables are for a Linen model; the NNX model LeNet5 holds its own"
    ):
        visualize.conv_outputs(model, images, variables=variables)
    with pytest.raises(TypeError, match="the Linen model LinenModel needs its variables"):
        visualize.first_conv(linen, images)
    with pytest.raises(TypeError, match="dataset must be a jaxcnn.data.ArrayDataset, got dict"):
        visualize.predict(linen, variables, dataset)  # the arguments' old order
    with pytest.raises(TypeError, match="images must be an array"):
        visualize.conv_outputs(linen, variables)
    with pytest.raises(
        ValueError, match=r"images must be an array \(N, \*spatial, C\), got shape \(12, 12\)"
    ):
        visualize.conv_outputs(model, images[0, ..., 0])
    with pytest.raises(TypeError, match="model must be a flax.nnx.Module or a flax.linen.Module"):
        visualize.predict(lambda x: x, dataset)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = visualize.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


@pytest.mark.parametrize("channels", [1, 3, 6])
def test_plot_filters_draws_one_panel_per_filter(channels):
    kernel = np.random.default_rng(0).standard_normal((5, 5, channels, 10))
    figure = visualize.plot_filters(kernel, columns=4, title="filters")
    assert sum(axis.get_images() != [] for axis in figure.axes) == 10
    _draws(figure)


def test_plot_filters_rejects_a_kernel_that_is_not_2d():
    with pytest.raises(ValueError, match="kernel must be"):
        visualize.plot_filters(np.zeros((3, 1, 4)))


def test_plot_feature_maps_draws_the_input_then_the_maps():
    maps = np.random.default_rng(0).standard_normal((6, 6, 40))
    figure = visualize.plot_feature_maps(maps, image=np.zeros((8, 8, 1), np.uint8), max_maps=12)
    titles = [axis.get_title() for axis in figure.axes if axis.get_images()]
    assert titles == ["input", *(f"map {k}" for k in range(12))]
    _draws(figure)
    with pytest.raises(ValueError, match="maps must be"):
        visualize.plot_feature_maps(maps[None])


def test_plot_confusion_matrix_reports_the_accuracy():
    matrix = np.array([[8, 2], [1, 9]])
    figure = visualize.plot_confusion_matrix(matrix, ["cat", "dog"])
    assert "85.0%" in figure.axes[0].get_title()
    _draws(figure)


def test_plot_misclassified_shows_only_wrong_predictions():
    images = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    labels, predictions = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 2, 2, 1, 1, 2])
    figure = visualize.plot_misclassified(images, labels, predictions, ["a", "b", "c"])
    assert [axis.get_title() for axis in figure.axes if axis.get_images()] == ["b → c", "a → b"]
    _draws(figure)
    _draws(visualize.plot_misclassified(images, labels, labels))  # none wrong: a note, no error


def test_plot_learning_curves_draws_train_and_test():
    lines = [{"step": s, "split": "train", "loss": 1 / s, "accuracy": 0.5} for s in (1, 2, 3)]
    lines.append({"step": 3, "split": "test", "loss": 0.4, "accuracy": 0.8})
    _draws(visualize.plot_learning_curves(lines))


def test_a_window_of_skipped_steps_is_a_gap_in_the_curves():
    lines = [{"step": s, "split": "train", "loss": 1 / s, "accuracy": 0.5} for s in (1, 2, 3)]
    lines[1].update(loss=None, accuracy=None)  # every step of that window skipped (non-finite)
    figure = visualize.plot_learning_curves(lines)
    _draws(figure)
    loss, accuracy = (axes.lines[0].get_ydata() for axes in figure.axes)
    np.testing.assert_array_equal(loss, [1.0, np.nan, 1 / 3])
    np.testing.assert_array_equal(accuracy, [50.0, np.nan, 50.0])


def test_importing_leaves_the_matplotlib_backend_alone():
    code = "import matplotlib; matplotlib.use('svg'); import jaxcnn.training; print(matplotlib.get_backend())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "svg", result.stderr[-2000:]
