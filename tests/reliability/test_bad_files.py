"""Damaged or wrong input files (issue #17, class 4): every file a loader reads is checked on
read and fails with one error that names the file and what is wrong; the CLI prints it as one
line and exits with status 2, no traceback.  A damaged cache is rebuilt, never trusted."""

from __future__ import annotations

import tarfile
import warnings

import numpy as np
import pytest
import torch

from tiltedsam.cli import main
from tiltedsam.data import load_cifar, load_mnist, load_mnist1d
from tiltedsam.data.glue import load_glue_split

from ..test_data import write_image_folder


def _archive(tmp_path):
    root = write_image_folder(tmp_path / "img")
    archive = tmp_path / "img.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-fixture")
    return archive


def _mnist(path, labels=None):
    rng = np.random.default_rng(0)
    y = np.arange(20, dtype=np.uint8) % 10 if labels is None else labels
    np.savez(path, x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
             y_test=np.arange(5, dtype=np.uint8))  # fmt: skip
    return path


def test_truncated_archive_names_the_file(tmp_path):
    archive = _archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(ValueError, match=rf"{archive}: damaged"):
        load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")


def test_a_flipped_bit_in_the_archive_is_caught_not_trained_on(tmp_path):
    """Before the fix the tar reader stopped at the end marker, never reached the gzip CRC, and a
    corrupted image was decoded, trained on and cached."""
    archive = _archive(tmp_path)
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    archive.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{archive}: damaged"):
        load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing cached


def test_a_damaged_cache_is_rebuilt_from_the_source(tmp_path):
    archive = _archive(tmp_path)
    first = load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.warns(UserWarning, match="rebuilding the cache"):
        again = load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is good again
        load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")


def test_a_changed_source_gets_a_new_cache(tmp_path):
    """The cache is keyed by content: the same path with other images is not served stale."""
    root = write_image_folder(tmp_path / "img")
    first = load_cifar(root, num_classes=3, cache_dir=tmp_path / "cache")
    from PIL import Image

    image = root / "train" / "cat" / "0000.png"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(image)
    second = load_cifar(root, num_classes=3, cache_dir=tmp_path / "cache")
    assert not torch.equal(first.x_train, second.x_train)


def test_an_mnist_file_given_as_mnist1d_names_what_is_missing(tmp_path):
    path = _mnist(tmp_path / "mnist.npz")
    with pytest.raises(ValueError, match=rf"{path}: not an MNIST-1D cache: missing arrays"):
        load_mnist1d(path)


def test_truncated_npz_names_the_file(tmp_path):
    path = _mnist(tmp_path / "m.npz")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{path}: (damaged|not a readable)"):
        load_mnist(path)


def test_labels_outside_the_classes_fail_at_load_not_mid_training(tmp_path):
    labels = np.arange(20, dtype=np.uint8) % 10
    labels[7] = 12
    path = _mnist(tmp_path / "m.npz", labels)
    with pytest.raises(ValueError, match=rf"{path}: .*outside \[0, 9\] \(e.g. 12 at row 7\)"):
        load_mnist(path)


def test_glue_file_against_its_md5sums(tmp_path):
    task = tmp_path / "RTE"
    task.mkdir()
    good = "index\tsentence1\tsentence2\tlabel\n0\tA cat.\tAn animal.\tentailment\n"
    (task / "train.tsv").write_text(good)
    import hashlib

    digest = hashlib.md5(good.encode()).hexdigest()
    (tmp_path / "MD5SUMS").write_text(f"{digest}  RTE/train.tsv\n")
    assert len(load_glue_split(tmp_path, "RTE", "train")) == 1
    (task / "train.tsv").write_text(good[:-5])
    with pytest.raises(ValueError, match=r"RTE/train.tsv: MD5 .* differs"):
        load_glue_split(tmp_path, "RTE", "train")


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = _mnist(tmp_path / "m.npz")
    path.write_bytes(path.read_bytes()[:1000])
    status = main(["compare", "--dataset", "mnist", "--data-path", str(path), "--model", "mlp",
                   "--epochs", "1", "--methods", "erm", "--out", str(tmp_path / "out"),
                   "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
