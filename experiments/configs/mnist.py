"""LeNet-5 on MNIST (TFDS downloads it once; or its IDX files in $JAXCNN_MNIST_DIR).

    python experiments/train.py --config experiments/configs/mnist.py --workdir runs/mnist

The recipe of `lenet5.py` (two epochs of Nesterov SGD with warm-up and cosine decay) on handwritten
digits. Not measured here: this machine cannot reach MNIST's server and no system package carries
MNIST; the tests run it on tiny IDX files they write.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "lenet5"
    config.dataset = "mnist"
    config.num_epochs = 2
    config.optimizer = "nesterov"
    config.learning_rate = 0.05
    config.schedule = "warmup_cosine"
    config.warmup_steps = 100
    return config
