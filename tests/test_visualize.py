"""jaxcnn.visualize: what the pictures show is computed right, and every plot draws headless."""

import io
import subprocess
import sys

import flax.linen as nn
import jax
import matplotlib.figure
import numpy as np
import pytest

from jaxcnn import data, functional, layers, models, visualize


@pytest.fixture(scope="module")
def lenet():
    """lenet5 on 12x12 inputs with random parameters, and a few random images."""
    model = models.create("lenet5")
    images = np.random.default_rng(0).standard_normal((5, 12, 12, 1)).astype(np.float32)
    return model, model.init(jax.random.PRNGKey(0), images[:1]), images


def _draws(figure):
    assert isinstance(figure, matplotlib.figure.Figure)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")


def test_conv_outputs_are_the_conv_layers_in_call_order(lenet):
    model, variables, images = lenet
    outputs = visualize.conv_outputs(model, variables, images)
    assert list(outputs) == ["Conv_0", "Conv_1"]
    conv0 = variables["params"]["Conv_0"]
    expected = functional.conv(images, conv0["kernel"], conv0["bias"], padding=2)
    np.testing.assert_allclose(outputs["Conv_0"], expected, rtol=1e-5, atol=1e-5)
    assert outputs["Conv_1"].shape == (5, 2, 2, 16)  # 12 -> 12 -> pool 6 -> 6 - 5 + 1 = 2


def test_first_conv_pairs_the_kernel_with_its_maps(lenet):
    model, variables, images = lenet
    path, kernel, maps = visualize.first_conv(model, variables, images)
    assert path == "Conv_0"
    np.testing.assert_array_equal(kernel, variables["params"]["Conv_0"]["kernel"])
    assert kernel.shape == (5, 5, 1, 6) and maps.shape == (5, 12, 12, 6)


def test_first_conv_finds_a_nested_convolution():
    model = models.create("resnet20")
    images = np.zeros((1, 8, 8, 3), np.float32)
    variables = model.init(jax.random.PRNGKey(0), images)
    path, kernel, maps = visualize.first_conv(model, variables, images)
    assert kernel.shape[:3] == (3, 3, 3) and maps.shape == (1, 8, 8, kernel.shape[-1])
    assert path == next(iter(visualize.conv_outputs(model, variables, images)))


class _DenseOnly(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return layers.Dense(3)(x)


def test_a_model_without_convolutions_is_a_clear_error():
    x = np.zeros((1, 4), np.float32)
    variables = _DenseOnly().init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="applies no jaxcnn.layers.Conv"):
        visualize.first_conv(_DenseOnly(), variables, x)


def test_predict_matches_apply_on_every_example_in_order():
    dataset = data.load("digits", "test").take(70)  # 70 = one full batch of 32, one of 32, a padded 6
    model = models.create("simple_cnn")
    variables = model.init(jax.random.PRNGKey(1), np.zeros((1, 8, 8, 1), np.float32))
    predicted = visualize.predict(model, variables, dataset, batch_size=32)
    images = data.normalize(dataset.images, dataset.mean, dataset.std)
    np.testing.assert_array_equal(predicted, model.apply(variables, images).argmax(-1))


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
