"""The strongest Fashion-MNIST recipe here: the ResNet-20 recipe trained three times longer.

    python experiments/train.py --config experiments/configs/best.py --workdir runs/best

`resnet20.py` (augmentation, label smoothing, weight decay, moving average of the weights) for 36
epochs. Aimed at >= 95% test accuracy; on 2 CPU cores it takes several hours, so it was not run in
the session that wrote it (see README, Results). On a GPU it takes minutes.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "resnet20"
    config.dataset = "fashion_mnist"
    config.num_epochs = 36
    config.batch_size = 128
    config.optimizer = "nesterov"
    config.learning_rate = 0.1
    config.schedule = "warmup_cosine"
    config.warmup_steps = 469
    config.weight_decay = 5e-4
    config.label_smoothing = 0.1
    config.augment_crop_padding = 2
    config.augment_flip = True
    config.augment_erase_probability = 0.5
    config.ema_decay = 0.999
    config.checkpoint_every = 1000
    return config
