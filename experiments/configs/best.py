"""The strongest Fashion-MNIST recipe here: `fastcnn` (1.97M parameters) for 18 epochs.

    python experiments/train.py --config experiments/configs/best.py --workdir runs/best

SGD with Nesterov momentum on batches of 256, the learning rate warmed up to 0.2 over 200 steps and
cosine-decayed to 0, weight decay 5e-4, label smoothing 0.2; random 2-pixel crops, left-right flips and
random erasing. Each test image is scored by the mean logits of 10 views (test-time augmentation): itself
and its copies moved one pixel up, down, left and right (`eval_shift`), each also mirrored (`eval_flip`).
Evaluated every 6 epochs.
Measured on 2 CPU cores (Intel Xeon, seed 0): 94.74% test accuracy in 44 min 21 s (~420 examples/s).
Aimed at >= 95% in <= 60 minutes: the time is met, the accuracy missed by 0.26 points (README, Results).
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "fastcnn"
    config.dataset = "fashion_mnist"
    config.num_epochs = 18
    config.batch_size = 256
    config.optimizer = "nesterov"
    config.learning_rate = 0.2
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = 200
    config.optim.weight_decay = 5e-4
    config.loss.label_smoothing = 0.2
    config.augment.crop_padding = 2
    config.augment.flip = True
    config.augment.erase_probability = 0.5
    config.eval.flip = True
    config.eval.shift = 1
    config.eval.every = 6 * (60_000 // 256)
    config.checkpoint_every = 1000
    return config
