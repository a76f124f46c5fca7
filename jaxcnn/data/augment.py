"""Data augmentation on device: per-example random crops, flips and erasing, jitted and vmapped;
and the fixed views of test-time augmentation.

Every example draws from its own key, split from one key per batch, so a batch's augmentation is a
function of (key, batch) only: the same on one device, sharded over many, or under `pmap`.

    spec = Augmentation(crop_padding=2, flip=True, erase_probability=0.5)
    images = spec(jax.random.key(0), images)          # (N, H, W, C) -> (N, H, W, C)
    views = eval_views(images, flip=True, shift=1)  # 10 batches (N, H, W, C)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxcnn._validate import Settings, boolean, integer, number


def random_crop(key: jax.Array, image: jax.Array, padding: int) -> jax.Array:
    """`image` `(H, W, C)` zero-padded by `padding` on every side, then cropped back to `(H, W, C)`."""
    if padding == 0:
        return image
    height, width, channels = image.shape
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """`image` `(H, W, C)` mirrored left-right with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def random_erasing(
    key: jax.Array,
    image: jax.Array,
    probability: float,
    area: tuple[float, float] = (0.02, 0.25),
    aspect_ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> jax.Array:
    """With `probability`, `value` written over a random rectangle of `image` `(H, W, C)`.

    The rectangle covers a uniform fraction `area` of the image with a log-uniform `aspect_ratio`
    (height / width), as in Zhong et al. (2017), clipped to the image.
    """
    height, width, _ = image.shape
    apply_key, area_key, ratio_key, position_key = jax.random.split(key, 4)
    fraction = jax.random.uniform(area_key, (), minval=area[0], maxval=area[1])
    log_ratio = jax.random.uniform(
        ratio_key, (), minval=jnp.log(aspect_ratio[0]), maxval=jnp.log(aspect_ratio[1])
    )
    ratio = jnp.exp(log_ratio)
    box_h = jnp.clip(jnp.round(jnp.sqrt(fraction * height * width * ratio)), 1, height).astype(jnp.int32)
    box_w = jnp.clip(jnp.round(jnp.sqrt(fraction * height * width / ratio)), 1, width).astype(jnp.int32)
    unit = jax.random.uniform(position_key, (2,))
    top = jnp.floor(unit[0] * (height - box_h + 1)).astype(jnp.int32)
    left = jnp.floor(unit[1] * (width - box_w + 1)).astype(jnp.int32)
    rows, cols = jnp.arange(height)[:, None, None], jnp.arange(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    erase = inside & jax.random.bernoulli(apply_key, probability)
    return jnp.where(erase, jnp.asarray(value, image.dtype), image)


def translate(images: jax.Array, rows: int, cols: int) -> jax.Array:
    """`images` `(N, H, W, C)` moved `rows` pixels down and `cols` right (negative: up, left), zero-filled:
    the window `random_crop` takes at that offset from the centre."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    rows, cols = integer(rows, "rows"), integer(cols, "cols")
    _, height, width, _ = images.shape
    if abs(rows) >= height or abs(cols) >= width:
        raise ValueError(f"shift ({rows}, {cols}) must be smaller than the images' {height}x{width} pixels")
    margin = max(abs(rows), abs(cols))
    padded = jnp.pad(images, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    return padded[:, margin - rows : margin - rows + height, margin - cols : margin - cols + width]


def eval_views(images: jax.Array, *, flip: bool = False, shift: int = 0) -> list[jax.Array]:
    """The batches `(N, H, W, C)` a test-time augmented prediction averages over: `images` itself; with
    `shift`, `images` moved `shift` pixels up, down, left and right; with `flip`, the mirror image of each."""
    integer(shift, "shift", minimum=0)
    offsets = [(0, 0)] + ([(-shift, 0), (shift, 0), (0, -shift), (0, shift)] if shift else [])
    views = [translate(images, rows, cols) for rows, cols in offsets]  # (0, 0) too: it checks `images`
    return views + [view[:, :, ::-1] for view in views] if flip else views


def mixup(images: jax.Array, weight: jax.Array) -> jax.Array:
    """Mixup (Zhang et al., 2018): `weight * images + (1 - weight) * partner`, each example's partner
    being the batch reversed (`images[::-1]`, as timm pairs them)."""
    return weight * images + (1 - weight) * images[::-1]


def cutmix(
    images: jax.Array, top: ArrayLike, left: ArrayLike, height: ArrayLike, width: ArrayLike
) -> jax.Array:
    """CutMix (Yun et al., 2019): the rectangle `[top, top + height) x [left, left + width)` of every image
    `(N, H, W, C)` replaced by that of its partner, the batch reversed."""
    rows = jnp.arange(images.shape[1])[:, None, None]
    cols = jnp.arange(images.shape[2])[None, :, None]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return jnp.where(inside, images[::-1], images)


def mix_batch(
    key: jax.Array, images: jax.Array, mixup_alpha: float, cutmix_alpha: float
) -> tuple[jax.Array, jax.Array]:
    """`(images, weight)`: the batch `(N, H, W, C)` mixed with itself reversed, by Mixup or CutMix (one of
    them, with probability 1/2 each, when both alphas are > 0), and the weight of each example's own label
    in its target (the partner's label, `labels[::-1]`, has `1 - weight`). One mix per batch, from `key`.

    The weight is drawn from Beta(alpha, alpha); CutMix's rectangle covers a fraction `1 - weight` of the
    image around a uniform centre, clipped to the image, and the weight is then the part left uncovered.
    """
    choose_key, beta_key, centre_key = jax.random.split(key, 3)
    use_cutmix = (
        jax.random.bernoulli(choose_key) if mixup_alpha and cutmix_alpha else jnp.asarray(bool(cutmix_alpha))
    )
    alpha = jnp.where(use_cutmix, cutmix_alpha or 1.0, mixup_alpha or 1.0)
    weight = jax.random.beta(beta_key, alpha, alpha).astype(images.dtype)
    _, height, width, _ = images.shape
    cut = jnp.sqrt(1 - weight)
    box_h, box_w = jnp.round(cut * height).astype(jnp.int32), jnp.round(cut * width).astype(jnp.int32)
    centre_y, centre_x = jax.random.randint(centre_key, (2,), 0, jnp.asarray([height, width]))
    top, bottom = (
        jnp.clip(centre_y - box_h // 2, 0, height),
        jnp.clip(centre_y - box_h // 2 + box_h, 0, height),
    )
    left, right = jnp.clip(centre_x - box_w // 2, 0, width), jnp.clip(centre_x - box_w // 2 + box_w, 0, width)
    cut_weight = 1 - ((bottom - top) * (right - left) / (height * width)).astype(images.dtype)
    mixed = jnp.where(
        use_cutmix, cutmix(images, top, left, bottom - top, right - left), mixup(images, weight)
    )
    return mixed, jnp.where(use_cutmix, cut_weight, weight)


@dataclasses.dataclass(frozen=True)
class Augmentation(Settings):
    """A batch transform (and `config.augment`): crop with `crop_padding`, then `flip`, then erase with
    `erase_probability`. The default does nothing (and costs nothing: `enabled` is False).

    Attributes:
      crop_padding: random crops of the image zero-padded by this many pixels on every side.
      flip: left-right flips with probability 1/2.
      erase_probability: random erasing (Zhong et al., 2017) of one rectangle with this probability.
      mixup_alpha, cutmix_alpha: > 0: each batch, after the above, is mixed with itself reversed by Mixup
        or CutMix, with a weight from Beta(alpha, alpha) (both > 0: one of them, 1/2 each; `mix_batch`);
        the loss weighs both labels. Applied by the train step (`training.steps.augmenting`).
    """

    crop_padding: int = 0
    flip: bool = False
    erase_probability: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        integer(self.crop_padding, "crop_padding", minimum=0)
        boolean(self.flip, "flip")
        number(self.erase_probability, "erase_probability", minimum=0.0, maximum=1.0)
        number(self.mixup_alpha, "mixup_alpha", minimum=0.0)
        number(self.cutmix_alpha, "cutmix_alpha", minimum=0.0)

    @property
    def enabled(self) -> bool:
        """Whether the images are transformed one by one (crops, flips, erasing)."""
        return bool(self.crop_padding or self.flip or self.erase_probability)

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (Mixup or CutMix), which changes the targets too."""
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def augment_one(self, key: jax.Array, image: jax.Array) -> jax.Array:
        """One image `(H, W, C)`."""
        crop_key, flip_key, erase_key = jax.random.split(key, 3)
        image = random_crop(crop_key, image, self.crop_padding)
        if self.flip:
            image = random_flip(flip_key, image)
        if self.erase_probability:
            image = random_erasing(erase_key, image, self.erase_probability)
        return image

    def __call__(self, key: jax.Array, images: jax.Array, *, axis_name: str | None = None) -> jax.Array:
        """`images` `(N, H, W, C)`, each with its own key from `key`.

        Under `pmap` with `axis_name`, `images` is this device's share of a global batch: the keys are
        the global batch's, sliced, so the result equals augmenting the global batch on one device.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
        if not self.enabled:
            return images
        count = images.shape[0]
        if axis_name is None:
            keys = jax.random.split(key, count)
        else:
            devices = lax.psum(1, axis_name)
            keys = lax.dynamic_slice_in_dim(
                jax.random.split(key, count * devices), lax.axis_index(axis_name) * count, count
            )
        return jax.vmap(self.augment_one)(keys, images)
