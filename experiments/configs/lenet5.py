"""LeNet-5 on Fashion-MNIST: the default run.

    python experiments/train.py --config experiments/configs/lenet5.py --workdir runs/lenet5

Two epochs (936 steps of batch 128) of SGD with Nesterov momentum 0.9, the learning rate warmed up to
0.05 over 100 steps and cosine-decayed to 0, on the 60,000 training images; then the 10,000 test
images. Measured on 2 CPU cores: 88.95% ± 0.63 test accuracy over seeds 0, 1, 2 (89.62, 88.37, 88.85), about
20 seconds of training each, 40 with start-up (experiments/results.md). `--config.num_epochs=8`
reached 91.32% (seed 0) in 4.6 minutes on the machine while it was shared with other jobs.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "lenet5"
    config.dataset = "fashion_mnist"
    config.num_epochs = 2
    config.batch_size = 128
    config.optimizer = "nesterov"
    config.learning_rate = 0.05
    config.schedule = "warmup_cosine"
    config.warmup_steps = 100
    return config
