"""Loaders on fixtures the tests make: CIFAR ImageFolder (dir and tar.gz), MNIST npz, label noise,
validation split, augmentation, and resuming an interrupted run."""

import tarfile

import numpy as np
import pytest
import torch

from tiltedsam.data import (
    ArrayDataset,
    apply_label_noise,
    load_cifar,
    load_dataset,
    load_mnist,
    random_crop_flip,
    split_validation,
)
from tiltedsam.experiments import TrainConfig, parse_method, train_run

from .test_experiments import tiny_data

CLASSES = ["cat", "airplane", "dog"]  # sorted: airplane=0, cat=1, dog=2


def write_image_folder(root, per_class=(4, 2)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((8, 8, 3), 40 * c + i, dtype=np.uint8)
                pixels[0, 0] = rng.integers(0, 255, 3)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def test_cifar_image_folder_and_archive_give_the_same_data(tmp_path):
    root = write_image_folder(tmp_path / "img")
    data = load_cifar(root, num_classes=3, cache_dir=tmp_path / "cache")
    assert data.x_train.shape == (12, 3, 8, 8) and data.x_test.shape == (6, 3, 8, 8)
    assert data.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # ImageFolder (sorted) order
    archive = tmp_path / "img.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-fixture")
    packed = load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")
    assert torch.equal(packed.x_train, data.x_train) and torch.equal(packed.y_test, data.y_test)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    again = load_cifar(archive, num_classes=3, cache_dir=tmp_path / "cache")  # from the cache
    assert torch.equal(again.x_train, data.x_train)
    # folder CLASSES[c] holds pixel value 40·c + i; airplane (label 0) is c = 1, cat (1) is c = 0
    red = data.x_train[:, 0, 1, 1] * 0.2470 + 0.4914
    assert torch.allclose(
        red * 255, torch.tensor([40, 41, 42, 43, 0, 1, 2, 3, 80, 81, 82, 83.0]), atol=1e-3
    )


def test_cifar_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR data not found"):
        load_cifar(tmp_path / "missing.tar.gz")
    root = write_image_folder(tmp_path / "img")
    with pytest.raises(ValueError, match="found 3 classes, expected num_classes=10"):
        load_cifar(root, num_classes=10, cache_dir=tmp_path / "c")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="expected images under train"):
        load_cifar(empty, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5])
def test_label_noise_flips_an_exact_fraction_to_other_classes(fraction):
    labels = torch.arange(1000) % 10
    noisy = apply_label_noise(labels, fraction, 10, seed=3)
    changed = noisy != labels
    assert int(changed.sum()) == round(fraction * 1000)
    assert torch.equal(noisy, apply_label_noise(labels, fraction, 10, seed=3))
    assert noisy.min() >= 0 and noisy.max() < 10
    if fraction:
        assert not torch.equal(noisy, apply_label_noise(labels, fraction, 10, seed=4))
        counts = torch.bincount((noisy[changed] - labels[changed]) % 10, minlength=10)
        assert counts[0] == 0  # never "flipped" to the same class
    with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\]"):
        apply_label_noise(labels, 1.5, 10, 0)


def test_validation_split_is_disjoint_and_seeded():
    data = tiny_data(n=100)
    split = split_validation(data, 0.25, seed=1)
    assert len(split.x_val) == 17 and len(split.x_train) == 51  # 68 training rows in tiny_data
    rows = {tuple(r.tolist()) for r in data.x_train.reshape(len(data.x_train), -1)}
    train = {tuple(r.tolist()) for r in split.x_train.reshape(len(split.x_train), -1)}
    val = {tuple(r.tolist()) for r in split.x_val.reshape(len(split.x_val), -1)}
    assert train | val == rows and not train & val
    assert torch.equal(split_validation(data, 0.25, seed=1).x_val, split.x_val)
    with pytest.raises(ValueError, match="non-empty"):
        split_validation(data, 0, seed=1)


def test_mnist_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20, dtype=np.uint8) % 10,
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
             y_test=np.arange(5, dtype=np.uint8))  # fmt: skip
    data = load_mnist(path)
    assert data.x_train.shape == (20, 1, 28, 28) and data.y_train.dtype == torch.int64
    assert data.y_train.tolist() == [i % 10 for i in range(20)]
    with pytest.raises(FileNotFoundError, match="MNIST file not found"):
        load_mnist(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="missing arrays"):
        load_mnist(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="train_subset must be in"):
        load_dataset("mnist", path, train_subset=100)


def test_random_crop_flip():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = random_crop_flip(x, gen, (0.0, 0.0, 0.0), padding=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    padded = random_crop_flip(x, gen, (-1.0, -2.0, -3.0), padding=2)
    assert padded.shape == x.shape
    values = set(padded[:, 1].unique().tolist())
    assert values <= set(x[:, 1].unique().tolist()) | {-2.0}


@pytest.mark.parametrize("method", ["sam", "tsam:num_samples=2"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, method):
    data = split_validation(tiny_data(n=120), 12, seed=0)
    config = TrainConfig(model="mlp", epochs=3, batch_size=16, lr=0.05)
    spec = parse_method(method)
    full = train_run(spec, data, config, 0, progress=False)
    checkpoint = tmp_path / "ck.pt"
    with pytest.raises(InterruptedError):
        train_run(spec, data, config, 0, progress=False, checkpoint=checkpoint, stop_after_epochs=2)
    assert checkpoint.exists()
    resumed = train_run(spec, data, config, 0, progress=False, checkpoint=checkpoint)
    assert resumed.test_loss == full.test_loss and resumed.train_loss == full.train_loss
    assert [h["val_accuracy"] for h in resumed.history] == [h["val_accuracy"] for h in full.history]


def test_training_with_augmentation_runs(tmp_path):
    root = write_image_folder(tmp_path / "img", per_class=(8, 2))
    data = load_cifar(root, num_classes=3, cache_dir=tmp_path / "cache")
    result = train_run(parse_method("tsam:num_samples=2"), data,
                       TrainConfig(model="resnet8", epochs=1, batch_size=8), 0, progress=False)  # fmt: skip
    assert 0 <= result.test_accuracy <= 1 and result.closure_calls == 3 * 4


@pytest.mark.parametrize("seed", [0, 1])
def test_label_noise_is_spread_over_train_and_validation(seed):
    """Regression: flips and the validation split once drew the same permutation, so with
    label_noise == val fraction every flipped label landed in validation and none in train."""
    n = 5000
    clean = torch.arange(n) % 10
    index = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1)  # x holds the row index
    data = ArrayDataset(index, apply_label_noise(clean, 0.2, 10, seed), index[:10],
                        clean[:10], 10, "t", y_train_clean=clean)  # fmt: skip
    split = split_validation(data, 1000, seed)
    train_flipped = (split.y_train != split.y_train_clean).float().mean()
    val_flipped = (split.y_val != clean[split.x_val.reshape(-1).long()]).float().mean()
    assert 0.17 < train_flipped < 0.23
    assert 0.15 < val_flipped < 0.25


@pytest.mark.parametrize("label_noise", [0.0, 0.5])
def test_clean_labels_stay_aligned_with_a_training_subset(tmp_path, monkeypatch, label_noise):
    """``y_train_clean`` (what the clean-label training accuracy is measured against) holds the
    true label of the same example after the subset, the noise and the validation split: each
    image's pixel encodes its class, so the truth is read off the inputs."""
    from PIL import Image

    monkeypatch.setenv("TILTEDSAM_CACHE", str(tmp_path / "cache"))
    for split, count in (("train", 3), ("test", 1)):
        for c in range(10):
            folder = tmp_path / "img" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8, 3), 20 * c + i, dtype=np.uint8)).save(
                    folder / f"{i}.png"
                )
    data = load_dataset("cifar10", tmp_path / "img", label_noise=label_noise, train_subset=16,
                        val_size=4, seed=3)  # fmt: skip
    pixel = data.x_train[:, 0, 0, 0] * 0.2470 + 0.4914  # CIFAR-10's red mean/std undone
    truth = torch.div(torch.round(pixel * 255).long(), 20, rounding_mode="floor")
    assert len(truth) == 12
    assert data.y_train_clean is not None and torch.equal(data.y_train_clean, truth)
    if label_noise == 0:
        assert torch.equal(data.y_train, truth)
    else:
        assert int((data.y_train != truth).sum()) > 0
