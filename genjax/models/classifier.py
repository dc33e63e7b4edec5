"""The feature network of genjax's FID: a small CNN classifier for 28x28 images.

Inception weights cannot be downloaded here, and MNIST-family FIDs in the literature use a
classifier trained on the dataset itself. Its penultimate layer (128 ReLU units) is the
feature space of eval/fid and eval/precision, eval/recall.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from genjax.models.dcgan import discriminator_conv

FEATURE_DIM = 128


class Classifier(nn.Module):
    """Conv(32, 3x3, stride 2) -> Conv(64, 3x3, stride 2) -> Dense(128) -> Dense(classes),
    ReLU after every hidden layer; images in [0, 1].

    Strided convolutions keep it cheap to train on a CPU (about 3 MFLOP per image forward).
    On CPU both are computed as the DCGAN discriminator's are, as im2col matrix products
    (genjax/models/dcgan.py): XLA:CPU's convolutions and their gradients run far below
    matmul speed on these small grids. The parameters are nn.Conv's either way.
    """

    num_classes: int = 10

    def setup(self):
        self.conv1 = nn.Conv(32, (3, 3), strides=(2, 2), conv_general_dilated=discriminator_conv)
        self.conv2 = nn.Conv(64, (3, 3), strides=(2, 2), conv_general_dilated=discriminator_conv)
        self.hidden = nn.Dense(FEATURE_DIM)
        self.logits = nn.Dense(self.num_classes)

    def features(self, x: jax.Array) -> jax.Array:
        """[B, 28, 28, C] -> [B, 128]: the FID feature space."""
        x = nn.relu(self.conv1(x))  # [B, 14, 14, 32]
        x = nn.relu(self.conv2(x))  # [B, 7, 7, 64]
        return nn.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def features_and_logits(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, 28, 28, C] -> (features [B, 128], logits [B, num_classes]), one pass."""
        h = self.features(x)
        return h, self.logits(h)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, 28, 28, C] -> class logits [B, num_classes]."""
        return self.features_and_logits(x)[1]
