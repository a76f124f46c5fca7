"""ResNet-50 on ImageNet with the recipe of Flax's imagenet example, from folders of JPEGs or their shards.

    python experiments/train.py --config experiments/configs/imagenet_resnet50.py --workdir runs/r50 \
        --config.data.dir=/data/imagenet

`data.dir` is ImageNet's `train/` and `test/` (its `val/`, linked or renamed) of one folder of JPEGs per class
(the synsets), or the shards `experiments/convert_to_shards.py` wrote from them (`data.imagenet`); the test
split is ImageNet's 50,000 validation images. Training views are random-resized crops (area 8-100%, ratio
3/4-4/3) at 224x224, flipped half the time, decoded in `data.workers` processes at the DCT scale the crop
allows; evaluation views are the center 87.5% square resized to 224.

Batch 1024, SGD with Nesterov momentum 0.9, learning rate 0.1 x 1024 / 256 = 0.4, linear warm-up over 5
epochs then cosine decay to 0 at 90 epochs, label smoothing 0.1, weight decay 1e-4 on the convolution and
dense kernels only (no BatchNorm parameter or bias decays, as Flax's example and timm), bfloat16 compute
(parameters float32), the last BatchNorm of each block initialised to zero (Flax's example). Flax's example
reaches ~76.3% top-1 with this recipe (without label smoothing). Raise `data.workers` to the host's cores: a
step needs 1,024 decoded images. Not run here (no ImageNet on this machine); tested end to end on generated
JPEGs with a tiny ResNet (tests/data/test_imagenet_run.py).
"""

from jaxcnn.training import default_config

BATCH_SIZE = 1024
TRAIN_IMAGES = 1_281_167  # ImageNet-1k's training split
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH_SIZE
WARMUP_EPOCHS = 5


def get_config():
    config = default_config()
    config.model = "resnet50"
    config.model_kwargs = {"zero_init_residual": True}
    config.dataset = "imagenet"
    config.data.image_size = 224
    config.data.workers = 8
    config.num_epochs = 90
    config.batch_size = BATCH_SIZE
    config.optimizer = "nesterov"
    config.learning_rate = 0.1 * BATCH_SIZE / 256
    config.optim.momentum = 0.9
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = WARMUP_EPOCHS * STEPS_PER_EPOCH
    config.optim.weight_decay = 1e-4
    config.optim.weight_decay_on = "kernels"
    config.loss.label_smoothing = 0.1
    config.compute.dtype = "bfloat16"
    config.eval.batch_size = 1000
    config.log_every = 100
    config.checkpoint_every = 1000
    return config
