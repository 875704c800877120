"""Every registered model builds for its input shape and produces one logit row per example."""

import pytest
import torch

from tiltedsam.models import MODELS, create_model

SHAPES = {"cnn1d": (1, 40), "mlp": (1, 40), "cnn2d": (1, 28, 28), "cnn2d_small": (1, 28, 28),
          "resnet8": (3, 32, 32),
          "resnet18": (3, 32, 32), "wrn16_8": (3, 32, 32)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, SHAPES[name], 7)
    x = torch.randn(2, *SHAPES[name])
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_parameter_counts_of_the_paper_models():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model("resnet18", (3, 32, 32), 100)) == 11_220_132  # CIFAR-100 ResNet-18
    assert count(create_model("resnet8", (3, 32, 32), 10)) == 78_042
    with pytest.raises(ValueError, match="model must be one of"):
        create_model("vgg16", (3, 32, 32), 10)
