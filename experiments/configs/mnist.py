"""LeNet-5 on MNIST (TFDS downloads it once; or its IDX files in $JAXCNN_MNIST_DIR).

    python experiments/train.py --config experiments/configs/mnist.py --workdir runs/mnist

The recipe of `lenet5.py` (eight epochs of Nesterov SGD with warm-up and cosine decay) on handwritten
digits. Not measured here: this machine cannot reach MNIST's server and no system package carries
MNIST; the tests run it on tiny IDX files they write.
"""

from configs import lenet5  # experiments/ is on sys.path when the scripts in it run


def get_config():
    config = lenet5.get_config()
    config.dataset = "mnist"
    return config
