"""unet_small: its parameter count by hand, per-pixel outputs, input checks, and PyTorch's numbers through
`load_torch_state_dict` on a PyTorch U-Net written here (ConvTranspose2d weights included)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models


def _conv(c_in, c_out, window):
    return window * window * c_in * c_out + c_out


def test_parameter_count_and_per_pixel_output():
    model = models.create_nnx("unet_small", num_classes=1, rngs=nnx.Rngs(0))
    expected = (
        _conv(1, 16, 3) + _conv(16, 16, 3) + _conv(16, 32, 3) + _conv(32, 32, 3)  # down levels
        + _conv(32, 64, 3) + _conv(64, 64, 3)  # middle
        + _conv(64, 32, 2) + _conv(64, 32, 3) + _conv(32, 32, 3)  # up2: transposed conv, then convs
        + _conv(32, 16, 2) + _conv(32, 16, 3) + _conv(16, 16, 3)  # up1
        + _conv(16, 1, 1)  # head
    )  # fmt: skip
    assert sum(np.size(leaf) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))) == expected == 116_753
    assert model(jnp.ones((2, 8, 12, 1))).shape == (2, 8, 12, 1)


def test_input_checks():
    model = models.create("unet_small", num_classes=1)
    Z.check_minimum_size(model, "unet_small", 4, channels=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        Z.variable_shapes(model, (1, 6, 8, 1))


def test_torch_state_dict_gives_torchs_numbers():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TorchUNet(nn.Module):
        def __init__(self, channels, classes, width=16):
            super().__init__()
            conv = lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1)
            w1, w2, w3 = width, 2 * width, 4 * width
            self.down1_conv1, self.down1_conv2 = conv(channels, w1), conv(w1, w1)
            self.down2_conv1, self.down2_conv2 = conv(w1, w2), conv(w2, w2)
            self.middle_conv1, self.middle_conv2 = conv(w2, w3), conv(w3, w3)
            self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
            self.up2_conv1, self.up2_conv2 = conv(2 * w2, w2), conv(w2, w2)
            self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
            self.up1_conv1, self.up1_conv2 = conv(2 * w1, w1), conv(w1, w1)
            self.head = nn.Conv2d(w1, classes, 1)

        def forward(self, x):
            twice = lambda a, b, x: torch.relu(b(torch.relu(a(x))))
            skip1 = twice(self.down1_conv1, self.down1_conv2, x)
            skip2 = twice(self.down2_conv1, self.down2_conv2, nn.functional.max_pool2d(skip1, 2))
            x = twice(self.middle_conv1, self.middle_conv2, nn.functional.max_pool2d(skip2, 2))
            x = twice(self.up2_conv1, self.up2_conv2, torch.cat([self.up2(x), skip2], 1))
            x = twice(self.up1_conv1, self.up1_conv2, torch.cat([self.up1(x), skip1], 1))
            return self.head(x)

    torch.manual_seed(0)
    reference = TorchUNet(channels=2, classes=3, width=4).eval()
    images = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).numpy()
    variables = models.load_torch_state_dict("unet_small", reference.state_dict(), width=4)
    got = models.create("unet_small", num_classes=3, width=4).apply(variables, np.moveaxis(images, 1, -1))
    np.testing.assert_allclose(got, np.moveaxis(expected, 1, -1), rtol=1e-4, atol=1e-5)
