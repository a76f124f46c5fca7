"""`python -m jaxcnn` / `jaxcnn.cli.main`: summary and models."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcnn import cli, models


def test_summary(capsys):
    assert cli.main(["summary", "lenet5", "--input-shape", "28,28,1"]) == 0
    out = capsys.readouterr().out
    assert "H2 = W2 = (28 − 5 + 2·2)/1 + 1 = 28" in out and "Total: 61,706 parameters" in out


def test_summary_with_classes_and_model_arguments(capsys):
    argv = ["summary", "mobilenet_v2", "--input-shape", "96x96x3", "--num-classes", "5"]
    assert cli.main([*argv, "--arg", "width_multiplier=0.5", "--arg", "dropout=0.1"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV2 on 96×96×3 inputs → 5" in out


def test_models_lists_the_registry(capsys):
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out.split() == models.available()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "vgg11", "--input-shape", "16,16,3"], "VGG needs inputs of at least 32x32"),
        (["summary", "lenet6", "--input-shape", "28,28,1"], "unknown model name 'lenet6'"),
        (["summary", "lenet5", "--input-shape", "28,28,1", "--arg", "widht=3"], "takes no argument"),
    ],
)
def test_model_errors_exit_2_with_the_message(capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["summary", "lenet5"],
        ["summary", "lenet5", "--input-shape", "0,28"],
        ["summary", "lenet5", "--arg", "x"],
    ],
)
def test_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "--input-shape" in capsys.readouterr().err or "KEY=VALUE" in capsys.readouterr().err


def test_python_dash_m():
    argv = [
        sys.executable,
        "-m",
        "jaxcnn",
        "summary",
        "resnet18",
        "--input-shape",
        "224,224,3",
        "--num-classes",
        "1000",
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    assert "Total: 11,689,512 parameters" in out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A few steps of `compact` on digits; a folder of its first test images as PNGs, and a broken one."""
    from PIL import Image

    from jaxcnn import data
    from jaxcnn.training import default_config, train_and_evaluate

    workdir = tmp_path_factory.mktemp("run")
    config = default_config()
    config.update_from_flattened_dict(
        {"model": "compact", "dataset": "digits", "batch_size": 32, "num_steps": 6, "optimizer": "adam",
         "learning_rate": 1e-2, "log_every": 3, "checkpoint_every": 6, "train_examples": 256,
         "test_examples": 64}
    )  # fmt: skip
    train_and_evaluate(config, workdir)
    images = tmp_path_factory.mktemp("images")
    test = data.load("digits", "test", num_examples=5)
    for i, image in enumerate(test.images):
        Image.fromarray(image[..., 0]).save(images / f"{i}.png")
    (images / "5.png").write_bytes(b"not a png")
    return workdir, images, test


def predictions(capsys, argv):
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


@pytest.mark.slow  # a short training run first
def test_export_then_predict_a_folder_from_the_workdir_and_the_artifact_alike(digits_run, tmp_path, capsys):
    workdir, images, test = digits_run
    artifact = tmp_path / "digits.stablehlo"
    assert cli.main(["export", str(workdir), "--out", str(artifact), "--raw-images"]) == 0
    assert str(artifact) in capsys.readouterr().out
    from_workdir, err = predictions(capsys, ["predict", str(workdir), str(images), "--json", "--top", "3"])
    assert "skipped" in err and "5.png" in err
    from_artifact, _ = predictions(capsys, ["predict", str(artifact), str(images), "--json", "--top", "3"])
    assert [p["path"] for p in from_workdir] == [str(images / f"{i}.png") for i in range(5)]
    for a, b in zip(from_workdir, from_artifact):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]] and len(a["top"]) == 3
        np.testing.assert_allclose(
            [t["probability"] for t in a["top"]], [t["probability"] for t in b["top"]], atol=1e-6
        )
    # the model's own eval-mode probabilities of the same pixels
    from jaxcnn import export

    servable = export.from_workdir(workdir)
    expected = jax.nn.softmax(servable.forward(raw_images=True)(test.images))
    for p, row in zip(from_workdir, expected):
        assert p["top"][0]["class"] == servable.info.class_names[int(np.argmax(row))]
        assert p["top"][0]["probability"] == pytest.approx(float(row.max()), abs=1e-6)
    assert cli.main(["predict", str(artifact), str(images / "0.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{images / '0.png'}: ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "{tmp}", "--out", "{tmp}/m.stablehlo"], "no config.json"),
        (["predict", "{tmp}/nothing.stablehlo", "x.png"], "neither a run's workdir nor an exported artifact"),
    ],
)
def test_export_and_predict_errors_exit_2_with_the_message(tmp_path, capsys, argv, message):
    assert cli.main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a short training run, then jax2onnx in its tool environment
def test_export_onnx_from_the_workdir_gives_the_runs_probabilities(digits_run, tmp_path, capsys):
    from jaxcnn.export.onnx import converter_available

    ort = pytest.importorskip("onnxruntime")
    if not converter_available():
        pytest.skip("no jax2onnx here nor in the tool environment: bash setup.sh export")
    workdir, _, test = digits_run
    artifact = tmp_path / "digits.onnx"
    argv = [
        "export",
        str(workdir),
        "--format",
        "onnx",
        "--out",
        str(artifact),
        "--raw-images",
        "--layout",
        "NCHW",
    ]
    assert cli.main(argv) == 0
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": test.images.transpose(0, 3, 1, 2)})[0]
    from jaxcnn import export

    expected = export.from_workdir(workdir).forward(raw_images=True)(test.images)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
