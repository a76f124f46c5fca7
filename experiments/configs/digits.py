"""The Flax MNIST example's CNN on scikit-learn's 8x8 digits: a complete run in seconds, offline.

    python experiments/train.py --config experiments/configs/digits.py --workdir runs/digits

`digits` ships with scikit-learn (1,437 training and 360 test images), so this run needs no download.
Twenty epochs (880 steps of batch 32) of Adam with a cosine-decayed learning rate. Measured on 2 CPU
cores: 99.44% test accuracy (seed 0), 4 seconds of training, under 30 seconds in all.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "simple_cnn"
    config.dataset = "digits"
    config.num_epochs = 20
    config.batch_size = 32
    config.optimizer = "adam"
    config.learning_rate = 2e-3
    config.optim.schedule = "cosine"
    config.log_every = 45
    config.checkpoint_every = 450
    return config
