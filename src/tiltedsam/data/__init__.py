"""Data loaders.  Nothing is downloaded at run time."""

from tiltedsam.data.mnist1d import ArrayDataset, load_mnist1d

__all__ = ["ArrayDataset", "load_mnist1d"]
