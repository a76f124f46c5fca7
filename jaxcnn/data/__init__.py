"""Datasets (in memory, or read when batches gather them) and the batches a training loop consumes.

train = jaxcnn.data.load("fashion_mnist", "train")      # ArrayDataset, uint8 (60000, 28, 28, 1)
for batch in jaxcnn.data.batches(train, 128, seed=0, epoch=0):
    batch["image"], batch["label"], batch["mask"]      # float32 normalized, int32, float32
photos = jaxcnn.data.load_folder("photos", "train", image_size=64)   # your own images (data/folder.py)
imagenet = jaxcnn.data.load_imagenet("/data/imagenet", "train", image_size=224)   # JPEGs, random crops
"""

from jaxcnn.data.augment import Augmentation, cutmix, eval_views, mix_batch, mixup, translate
from jaxcnn.data.datasets import (
    DATASETS,
    ArrayDataset,
    DataSettings,
    DataUnavailableError,
    LazyImages,
    TfdsImages,
    UnreadableImageError,
    available,
    digits,
    load,
    read_cifar10_archive,
    read_idx_split,
    register,
    synthetic,
)
from jaxcnn.data.folder import load_folder
from jaxcnn.data.idx import IdxFormatError, read_idx
from jaxcnn.data.imagenet import load_imagenet
from jaxcnn.data.loader import training_batches
from jaxcnn.data.pipeline import batches, epoch_order, normalize, normalize_on_device, num_batches, prefetch

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "Augmentation",
    "DataSettings",
    "DataUnavailableError",
    "IdxFormatError",
    "LazyImages",
    "TfdsImages",
    "UnreadableImageError",
    "available",
    "batches",
    "cutmix",
    "digits",
    "epoch_order",
    "eval_views",
    "load",
    "load_folder",
    "load_imagenet",
    "mix_batch",
    "mixup",
    "normalize",
    "normalize_on_device",
    "num_batches",
    "prefetch",
    "read_idx",
    "read_cifar10_archive",
    "read_idx_split",
    "register",
    "synthetic",
    "training_batches",
    "translate",
]
