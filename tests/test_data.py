"""Data loading: CIFAR pickles (written here), image folders, the shared offline copies, batching."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gofau.lab import data

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

SHARED = data.default_data_dir()
needs_cifar_jpeg = pytest.mark.skipif(
    not (SHARED / "cifar10-jpeg.tar.gz").is_file(),
    reason=f"CIFAR-10 JPEG copy absent: expected {SHARED}/cifar10-jpeg.tar.gz (set GOFAU_DATA to the shared data folder)")
needs_tiny = pytest.mark.skipif(
    not (SHARED / "tiny-imagenet-200-val.tar.gz").is_file()
    or not (SHARED / "tiny-imagenet-200-train-0.tar.gz").is_file(),
    reason=f"Tiny ImageNet archives absent: expected {SHARED}/tiny-imagenet-200-*.tar.gz (set GOFAU_DATA)")


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """No test reaches the network, whatever GOFAU_DOWNLOAD says outside."""
    monkeypatch.delenv("GOFAU_DOWNLOAD", raising=False)

    def refuse(name, folder):
        raise AssertionError(f"a test tried to download {name} into {folder}")
    monkeypatch.setattr(data, "_download_cifar", refuse)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty stand-ins for GOFAU_DATA, ../shared/data (via the repository root) and the download folder."""
    env, shared, xdg = tmp_path / "env", tmp_path / "shared" / "data", tmp_path / "xdg"
    for folder in (env, shared, xdg):
        folder.mkdir(parents=True)
    monkeypatch.setattr(data, "ROOT", tmp_path / "repo")
    monkeypatch.setenv("GOFAU_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    return dict(env=env, shared=shared, download=xdg / "gofau" / "data", cache=tmp_path / "cache")


def write_cifar10(root: Path, n_train=5, n_test=3):
    """A tiny CIFAR-10 in the official python-pickle layout (n_train images per training batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        with open(folder / split, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"k{i}" for i in range(10)]}, f)


def write_cifar100(root: Path, n_train=6, n_test=4):
    """A tiny CIFAR-100 in the official python-pickle layout; returns the arrays written."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 100, n).tolist()
        with open(folder / split, "wb") as f:
            pickle.dump({"data": x, "fine_labels": y, "coarse_labels": [0] * n, "filenames": [""] * n}, f)
        arrays[split] = (x, y)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f)
    return arrays


def test_cifar100_pickle_round_trip(tmp_path):
    arrays = write_cifar100(tmp_path / "data")
    d = data.load("cifar100", tmp_path / "data", tmp_path / "cache")
    x, y = arrays["train"]
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (6, 3, 32, 32)
    # official layout: 1024 red, then 1024 green, then 1024 blue values, row-major
    assert torch.equal(d.train_x[2, 1, 3, 5], torch.tensor(x[2, 1024 + 3 * 32 + 5]))
    assert d.train_y.tolist() == y and d.test_y.tolist() == arrays["test"][1]
    assert d.num_classes == 100 and d.classes[7] == "c7"
    assert d.identity["name"] == "CIFAR-100" and d.identity["n_test"] == 4


def test_cache_is_reused_and_keyed_on_content(tmp_path):
    write_cifar100(tmp_path / "data")
    first = data.load("cifar100", tmp_path / "data", tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("cifar100-*.pt")
    mtime = cached.stat().st_mtime_ns
    assert torch.equal(data.load("cifar100", tmp_path / "data", tmp_path / "cache").train_x, first.train_x)
    assert cached.stat().st_mtime_ns == mtime  # read from the cache, not decoded again
    # garbage of the same size and mtime is still a new source: decoded again, and refused
    src = tmp_path / "data" / "cifar-100-python" / "train"
    st = src.stat()
    src.write_bytes(b"x" * st.st_size)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ValueError, match="not a CIFAR python-pickle file"):
        data.load("cifar100", tmp_path / "data", tmp_path / "cache")


def test_a_damaged_cache_is_an_error_naming_it(tmp_path):
    write_cifar100(tmp_path / "data")
    data.load("cifar100", tmp_path / "data", tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("cifar100-*.pt")
    cached.write_bytes(cached.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"cache {cached} is damaged .*delete it"):
        data.load("cifar100", tmp_path / "data", tmp_path / "cache")


@needs_cifar_jpeg
def test_a_damaged_archive_is_refused_before_decoding(tmp_path):
    blob = bytearray((SHARED / "cifar10-jpeg.tar.gz").read_bytes())
    blob[15_000_000:15_000_064] = bytes(b ^ 0xFF for b in blob[15_000_000:15_000_064])
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(blob)
    with pytest.raises(ValueError, match=r"cifar10-jpeg\.tar\.gz is damaged or another file: its SHA-256 is"):
        data.load("cifar10-jpeg", tmp_path, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_sha256sums_beside_an_archive_is_checked(tmp_path):
    write_cifar100(tmp_path / "data")
    (tmp_path / "data" / "cifar-100-python" / "SHA256SUMS").write_text("00" * 32 + "  train\n")
    with pytest.raises(ValueError, match="train is damaged or another file"):
        data.load("cifar100", tmp_path / "data", tmp_path / "cache")


@needs_cifar_jpeg
def test_an_incomplete_copy_fails_the_count_check_naming_it(tmp_path):
    import tarfile
    with tarfile.open(SHARED / "cifar10-jpeg.tar.gz") as tf:
        members = [m for m in tf.getmembers() if m.isfile() and "/truck/" not in m.name and m.name.endswith("/0000.jpg")]
        tf.extractall(tmp_path, members=members, filter="data")
    with pytest.raises(ValueError, match=r"cifar10-jpeg/train decoded to 9 classes .*expected 10"):
        data.load("cifar10-jpeg", tmp_path, tmp_path / "cache")


def test_missing_cifar_names_path_and_remedy(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load("cifar10", tmp_path, tmp_path / "cache")
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "--download" in msg
    assert "Only that folder was looked in" in msg  # an explicit data_dir is not searched past


def test_order_explicit_then_env_then_shared(places, tmp_path):
    explicit = tmp_path / "explicit"
    write_cifar100(explicit, n_train=1)
    write_cifar100(places["env"], n_train=2)
    write_cifar100(places["shared"], n_train=3)
    assert len(data.load("cifar100", explicit, places["cache"]).train_y) == 1
    assert len(data.load("cifar100", None, places["cache"]).train_y) == 2
    (places["env"] / "cifar-100-python" / "meta").unlink()  # GOFAU_DATA lacks the data set: next place
    assert len(data.load("cifar100", None, places["cache"]).train_y) == 3
    # an explicit data_dir is used as is, even when it lacks the data set and others hold it
    with pytest.raises(FileNotFoundError, match="not found in data_dir"):
        data.load("cifar100", tmp_path / "empty", places["cache"])


def test_empty_gofau_data_is_unset(places, monkeypatch):
    write_cifar100(places["shared"])
    monkeypatch.setenv("GOFAU_DATA", "")
    assert data.default_data_dir() == places["shared"]
    assert data.load("cifar100", None, places["cache"]).identity["name"] == "CIFAR-100"


def test_download_stands_in_for_the_jpeg_copy(places, monkeypatch):
    calls = []

    def fake(name, folder):
        calls.append((name, folder))
        write_cifar10(folder)
    monkeypatch.setattr(data, "_download_cifar", fake)
    d = data.load("cifar10-jpeg", None, places["cache"], download=True)
    assert calls == [("cifar10", places["download"].resolve())]
    assert d.identity["name"] == "CIFAR-10" and d.identity["copy"] == "cifar-10-batches-py"
    assert d.identity["source"] == "official python-pickle release (torchvision.datasets download)"
    assert d.identity["stands_in_for"] == "cifar10-jpeg"
    assert d.train_x.shape == (25, 3, 32, 32) and d.classes[3] == "k3"
    # the earlier download is found without downloading again, also through GOFAU_DOWNLOAD=1
    monkeypatch.setenv("GOFAU_DOWNLOAD", "1")
    assert data.load("cifar10-jpeg", None, places["cache"]).identity == d.identity
    asked = data.load("cifar10", None, places["cache"]).identity
    assert "stands_in_for" not in asked and asked == {k: v for k, v in d.identity.items() if k != "stands_in_for"}
    assert len(calls) == 1
    # a recorded run may not go under the JPEG copy's name with the pickled copy's images
    from gofau.lab import train
    cfg = dict(dataset="cifar10-jpeg", cache_dir=str(places["cache"]), out=str(places["cache"] / "records"),
               width=0.125, epochs=1, limit=8, test_limit=8, device="cpu", progress=False, checkpoint_dir=None)
    with pytest.raises(ValueError, match="stood in for it; a recorded run must name the copy"):
        train.train(cfg)
    assert train.train({**cfg, "out": None})["dataset"]["stands_in_for"] == "cifar10-jpeg"
    # without permission the pickled copy never stands in for the JPEG copy
    monkeypatch.setenv("GOFAU_DOWNLOAD", "0")
    with pytest.raises(FileNotFoundError, match="not allowed"):
        data.load("cifar10-jpeg", None, places["cache"])


def test_not_found_anywhere_names_every_place_and_the_remedy(places):
    with pytest.raises(FileNotFoundError) as e:
        data.load("cifar10-jpeg", None, places["cache"])
    msg = str(e.value)
    for where in ("1. data_dir (--data-dir): not given", f"2. GOFAU_DATA: neither the folder {places['env']}",
                  f"3. ../shared/data beside the repository: neither the folder {places['shared']}",
                  f"4. download of the pickled CIFAR-10 into {places['download'].resolve()}"):
        assert where in msg
    assert "set GOFAU_DATA or --data-dir" in msg and "GOFAU_DOWNLOAD=1" in msg and "--download" in msg


def test_failed_download_is_reported_with_every_place(places, monkeypatch):
    def offline(name, folder):
        raise OSError("no network")
    monkeypatch.setattr(data, "_download_cifar", offline)
    with pytest.raises(FileNotFoundError) as e:
        data.load("cifar100", None, places["cache"], download=True)
    msg = str(e.value)
    assert "download of CIFAR-100" in msg and "OSError: no network" in msg
    assert str(places["env"]) in msg and str(places["shared"]) in msg


def test_gofau_download_must_be_0_or_1(monkeypatch):
    monkeypatch.setenv("GOFAU_DOWNLOAD", "yes")
    with pytest.raises(ValueError, match="GOFAU_DOWNLOAD must be 0 or 1"):
        data.load("cifar10")


def test_malformed_cifar_pickle(tmp_path):
    write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR python-pickle file"):
        data.load("cifar100", tmp_path, tmp_path / "cache")


def test_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        data.load("mnist")


def _write_folder(root: Path, classes=("b", "a"), per_class=3, size=8):
    from torchvision.io import encode_png
    g = torch.Generator().manual_seed(1)
    images = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
                (root / split / c / f"{i}.png").write_bytes(encode_png(img).numpy().tobytes())
                images[split, c, i] = img
    return images


def test_imagefolder_lossless_and_sorted(tmp_path):
    images = _write_folder(tmp_path / "tree")
    d = data.load("imagefolder", tmp_path / "tree", tmp_path / "cache")
    assert d.classes == ["a", "b"]  # sorted names define the labels
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(d.train_x[4], images["train", "b", 1])
    assert torch.equal(d.test_x[0], images["test", "a", 0])


def test_imagefolder_missing_split(tmp_path):
    (tmp_path / "tree" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="test/<class>/<image>"):
        data.load("imagefolder", tmp_path / "tree", tmp_path / "cache")


def test_cifar10_jpeg_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10-jpeg.tar.gz"):
        data.load("cifar10-jpeg", tmp_path, tmp_path / "cache")


@needs_cifar_jpeg
def test_cifar10_jpeg_archive():
    d = data.load("cifar10-jpeg")
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.classes[:3] == ["airplane", "automobile", "bird"]
    assert torch.bincount(d.train_y).tolist() == [5000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert d.identity["name"] == "CIFAR-10 (JPEG q75)" and d.identity["n_train"] == 50000
    # the decoded pixels are those of the JPEG file
    import tarfile
    from torchvision.io import decode_jpeg
    with tarfile.open(SHARED / "cifar10-jpeg.tar.gz") as tf:
        blob = tf.extractfile("cifar10-jpeg/test/bird/0000.jpg").read()
    ref = decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
    assert torch.equal(d.test_x[2000], ref)


@needs_cifar_jpeg
def test_extracted_folder_matches_archive(tmp_path):
    import tarfile
    with tarfile.open(SHARED / "cifar10-jpeg.tar.gz") as tf:
        members = [m for m in tf.getmembers() if "/0000.jpg" in m.name or "/0001.jpg" in m.name or m.isdir()]
        tf.extractall(tmp_path, members=members, filter="data")
    d = data.load("cifar10-jpeg", tmp_path, tmp_path / "cache")
    full = data.load("cifar10-jpeg")
    assert d.train_x.shape == (20, 3, 32, 32) and d.train_y.tolist() == [i // 2 for i in range(20)]
    assert torch.equal(d.test_x[4], full.test_x[2000])  # bird/0000.jpg


@needs_tiny
def test_tinyimagenet_archives(tmp_path):
    # one training shard: 50 classes, validation restricted to them
    for name in ("tiny-imagenet-200-val.tar.gz", "tiny-imagenet-200-train-0.tar.gz"):
        (tmp_path / name).symlink_to(SHARED / name)
    d = data.load("tinyimagenet", tmp_path, tmp_path / "cache")
    assert d.num_classes == 50 and d.train_x.shape == (25000, 3, 64, 64)
    assert d.test_x.shape == (2500, 3, 64, 64) and torch.bincount(d.test_y).tolist() == [50] * 50
    assert "1 of 4 training shards" in d.identity["copy"]


def test_subset_is_fixed_and_sorted():
    d = data.ImageData(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 2, 2),
                       torch.arange(20), torch.zeros(5, 3, 2, 2, dtype=torch.uint8), torch.arange(5), list("ab"))
    a, b = data.subset(d, 7, 3), data.subset(d, 7, 3)
    assert torch.equal(a.train_y, b.train_y) and len(a.train_y) == 7 and len(a.test_y) == 3
    assert a.train_y.tolist() == sorted(a.train_y.tolist())
    assert torch.equal(a.train_x[:, 0, 0, 0].long(), a.train_y)  # images stay with their labels
    assert a.identity["n_train"] == 7
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        data.subset(d, 0)


def test_augment_is_a_shift_or_flip_of_the_padded_image():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    y = data.augment(x, g, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):
        crops = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(y[i], c) or torch.equal(y[i], c.flip(-1)) for c in crops)
    assert torch.equal(y, data.augment(x, torch.Generator().manual_seed(0), pad=2))  # same seed, same batch
    assert not torch.equal(y, x)
    same = data.augment(x, g, pad=0, flip=False)
    assert torch.equal(same, x)


def test_normalize_formula():
    x = torch.tensor([[[[0, 255]], [[51, 102]], [[255, 0]]]], dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.2, 0.0]), torch.tensor([0.5, 0.1, 1.0])
    y = data.normalize(x, mean, std)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(y[0, 1, 0, 1], torch.tensor((0.4 - 0.2) / 0.1))


def test_batches_cover_every_item_once():
    x, y = torch.arange(10).view(10, 1), torch.arange(10)
    got = torch.cat([yb for _, yb in data.batches(x, y, 3, torch.Generator().manual_seed(0))])
    assert sorted(got.tolist()) == list(range(10))
    assert [len(b) for _, b in data.batches(x, y, 3)] == [3, 3, 3, 1]
    assert [len(b) for _, b in data.batches(x, y, 3, drop_last=True)] == [3, 3, 3]
