import inspect

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: the models are tiny, and on a loaded machine two
    spinning threads made such tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


class Shardable:
    """The closure ``build(x, y)`` returns, which split-batch methods (``tsam-split``) can also
    cut into shards, as they cut ``make_closure``'s: ``shards(k)`` builds one per shard."""

    def __init__(self, build, x, y):
        self.build, self.x, self.y = build, x, y
        self._fn = build(x, y)
        self.__signature__ = inspect.signature(self._fn)  # e.g. a backward= flag shows through

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def shards(self, k):
        return [Shardable(self.build, xs, ys)
                for xs, ys in zip(torch.tensor_split(self.x, k), torch.tensor_split(self.y, k), strict=True)]  # fmt: skip


def closure_for(model, x, y):
    def build(x, y):
        def closure():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        return closure

    return Shardable(build, x, y)
