"""LeNet-5, from LeCun, Bottou, Bengio and Haffner, "Gradient-Based Learning Applied to Document
Recognition" (Proc. IEEE, 1998).

Two simplifications are the usual ones and keep the well-known count of 61,706 parameters (10
classes): C3 connects every S2 map to every C3 map (the paper's sparse table has 1,516 weights
instead of 2,416), and the subsampling layers are plain average pools without the paper's
trainable coefficient and bias. The output layer is a linear layer rather than Euclidean RBF units,
so the model is trained with cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.base import InputSpec, ZooModel
from zoo.models.registry import register_model


@register_model("lenet")
class LeNet5(ZooModel):
    """LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, fc ``num_classes``.

    Args:
        num_classes: Number of output classes (10 for MNIST).
        in_channels: Channels of the input image (1 for MNIST).
        modern: Use ReLU and max pooling instead of the paper's tanh and average pooling.

    Only 32x32 inputs are accepted: the first fully connected layer (the paper's C5, a 5x5
    convolution over a 5x5 map) sees exactly 16x5x5 features.
    """

    # The paper's 28x28 MNIST digits are centred in a 32x32 field, so that strokes reach the
    # centre of C3's receptive fields; that padding belongs in the data pipeline, not here.
    default_input_spec = InputSpec(native=32, minimum=32, exact=True)
    head_names = ("classifier.4",)
    first_conv = "features.0.weight"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, modern: bool = False) -> None:
        super().__init__(in_channels, num_classes)
        self.modern = modern

        # The paper squashes with 1.7159 * tanh(2/3 * a); plain tanh differs only by a scale.
        activation: type[nn.Module] = nn.ReLU if modern else nn.Tanh
        pool: type[nn.Module] = nn.MaxPool2d if modern else nn.AvgPool2d

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # C1: 32 -> 28
            activation(),
            pool(kernel_size=2, stride=2),  # S2: 28 -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # C3: 14 -> 10
            activation(),
            pool(kernel_size=2, stride=2),  # S4: 10 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),  # C5
            activation(),
            nn.Linear(120, 84),  # F6
            activation(),
            nn.Linear(84, num_classes),
        )

    def check_input_size(self, height: int, width: int | None = None) -> None:
        """Raise a ValueError unless the image is exactly 32x32."""
        try:
            super().check_input_size(height, width)
        except ValueError as err:
            # The usual mistake is feeding MNIST's 28x28 digits as they are.
            hint = "pad 28x28 MNIST digits by 2 pixels in the data pipeline"
            raise ValueError(f"{err} ({hint})") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
