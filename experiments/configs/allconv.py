"""The all-convolutional net (Springenberg et al. 2015: strided convolutions instead of pooling) on
Fashion-MNIST.

    python experiments/train.py --config experiments/configs/allconv.py --workdir runs/allconv

Ten epochs of SGD with Nesterov momentum (learning rate 0.05, warm-up then cosine decay), weight decay
5e-4, random 2-pixel crops. About 0.4 GFLOP per 28x28 image forward: ~150 examples/s on 2 CPU cores,
about 70 minutes for the ten epochs. Measured (seed 0, `--config.num_epochs=3`): 83.64% test accuracy
after 21 minutes of training.
"""

from jaxcnn.training import default_config


def get_config():
    config = default_config()
    config.model = "allconv"
    config.dataset = "fashion_mnist"
    config.num_epochs = 10
    config.batch_size = 128
    config.optimizer = "nesterov"
    config.learning_rate = 0.05
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = 469
    config.optim.weight_decay = 5e-4
    config.augment.crop_padding = 2
    config.checkpoint_every = 1000
    return config
