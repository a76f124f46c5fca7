"""`python -m jaxcnn` / `jaxcnn.cli.main`: summary and models."""

import subprocess
import sys

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
