import pytest
import torch


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def make_regression(n: int = 32, d: int = 5, k: int = 3, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def make_mlp(d: int = 5, k: int = 3, seed: int = 0, dtype=torch.float64, batchnorm: bool = False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(d, 8)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(8))
    layers += [torch.nn.Tanh(), torch.nn.Linear(8, k)]
    return torch.nn.Sequential(*layers).to(dtype)


def closure_for(model, x, y):
    def closure():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure
