"""ResNet-20 on CIFAR-10 (TFDS downloads it once; or cifar-10-binary.tar.gz in $JAXCNN_CIFAR10_DIR).

    python experiments/train.py --config experiments/configs/cifar10.py --workdir runs/cifar10

He et al.'s (2016) CIFAR recipe shortened to 60 epochs: SGD with Nesterov momentum 0.9, learning
rate 0.1 with warm-up and cosine decay, weight decay 1e-4, 4-pixel random crops and left-right flips.
Not measured here: this machine cannot reach CIFAR-10's server; the tests run it on a tiny archive
they write.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "resnet20"
    config.dataset = "cifar10"
    config.num_epochs = 60
    config.batch_size = 128
    config.optimizer = "nesterov"
    config.learning_rate = 0.1
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = 390
    config.optim.weight_decay = 1e-4
    config.augment.crop_padding = 4
    config.augment.flip = True
    config.checkpoint_every = 1000
    return config
