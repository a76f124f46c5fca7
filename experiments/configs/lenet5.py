"""LeNet-5 on Fashion-MNIST: the default run.

    python experiments/train.py --config experiments/configs/lenet5.py --workdir runs/lenet5

Two epochs of SGD with momentum 0.9 (learning rate 0.05, batch 128) on the 60,000 training
images, then the 10,000 test images: about 89% test accuracy in about two minutes on 2 CPU cores.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "lenet5"
    config.dataset = "fashion_mnist"
    config.num_epochs = 2
    config.batch_size = 128
    config.optimizer = "momentum"
    config.learning_rate = 0.05
    return config
