"""Data readers on the embedded files and on synthetic files in the real formats."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
import torch

from uno.unlearn.data import (
    embedded_mnist_dir,
    load_celeba,
    load_mnist,
    read_idx,
    resolve_targets,
    split_indices,
)
from uno.unlearn.errors import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_embedded_files_are_the_shipped_ones():
    want = {
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }
    for name, sha in want.items():
        assert hashlib.sha256((embedded_mnist_dir() / name).read_bytes()).hexdigest() == sha
    assert "Attribution-Share Alike 3.0" in (embedded_mnist_dir() / "README.md").read_text()


def test_embedded_split(mnist):
    tr, he = mnist
    assert tr.x.shape == (8000, 1, 28, 28) and he.x.shape == (2000, 1, 28, 28)
    assert tr.x.dtype == torch.float32 and 0.0 <= float(tr.x.min()) and float(tr.x.max()) <= 1.0
    assert int((tr.y == 1).sum() + (he.y == 1).sum()) == 1135  # the real test set's ones
    a, b = split_indices(10000, 2000)
    a2, b2 = split_indices(10000, 2000)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == 10000


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_mnist_from_path(tmp_path, compress, layout):
    rng = np.random.default_rng(0)
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 30), ("t10k", 10)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = _idx_bytes(arr)
            if compress:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
    tr, he = load_mnist(tmp_path)
    assert tr.x.shape == (30, 1, 28, 28) and he.x.shape == (10, 1, 28, 28)
    assert tr.y.tolist() == [i % 10 for i in range(30)]


def test_mnist_only_t10k_is_split(tmp_path):
    shutil.copy(embedded_mnist_dir() / "t10k-images-idx3-ubyte.gz", tmp_path)
    shutil.copy(embedded_mnist_dir() / "t10k-labels-idx1-ubyte.gz", tmp_path)
    tr, he = load_mnist(tmp_path)
    assert len(tr) == 8000 and len(he) == 2000


def test_idx_reader_dtypes(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)


@pytest.mark.parametrize(
    "payload, msg",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 3) + b"abc", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", "type code"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "holds 3 bytes"),
        (b"\x00\x00\x08\x03\x00", "truncated"),
        (b"\x1f\x8bnot really gzip", "gzip"),
    ],
)
def test_idx_malformed(tmp_path, payload, msg):
    p = tmp_path / "bad"
    p.write_bytes(payload)
    with pytest.raises(DataError, match=msg):
        read_idx(p)


def test_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(DataError, match="t10k-images"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="do not match"):
        load_mnist(tmp_path)


def test_resolve_targets(mnist):
    tr, _ = mnist
    assert resolve_targets(tr, ["1", "7"]) == [1, 7]
    with pytest.raises(DataError, match="unknown class"):
        resolve_targets(tr, ["11"])


def _celeba(root, n=5, with_partition=True):
    import matplotlib.image as mpimg

    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = ["Male", "Smiling", "Young"]
    lines = [str(n), " ".join(names)]
    rng = np.random.default_rng(0)
    for i in range(n):
        fn = f"{i + 1:06d}.jpg"
        img = (rng.random((218, 178, 3)) * 255).astype(np.uint8)
        mpimg.imsave(base / "img_align_celeba" / fn, img, format="jpg")
        vals = [1 if (i + j) % 2 else -1 for j in range(len(names))]
        lines.append(fn + "  " + " ".join(f"{v:2d}" for v in vals))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if with_partition:
        (base / "list_eval_partition.txt").write_text(
            "\n".join(f"{i + 1:06d}.jpg {0 if i < 3 else 2}" for i in range(n)) + "\n"
        )
    return base


def test_celeba_synthetic(tmp_path):
    _celeba(tmp_path)
    tr, he = load_celeba(tmp_path, size=32)
    assert tr.x.shape == (3, 3, 32, 32) and he.x.shape == (2, 3, 32, 32)
    assert tr.names == ("Male", "Smiling", "Young") and tr.kind == "attribute"
    assert tr.y.tolist()[0] == [0, 1, 0]
    assert tr.forget_mask([0]).tolist() == [False, True, False]
    assert resolve_targets(tr, ["Male"]) == [0]
    with pytest.raises(DataError, match="unknown attribute"):
        resolve_targets(tr, ["Bald"])


def test_celeba_errors(tmp_path):
    with pytest.raises(DataError, match="img_align_celeba"):
        load_celeba(tmp_path)
    base = _celeba(tmp_path, with_partition=False)
    tr, he = load_celeba(tmp_path, size=16)
    assert len(tr) + len(he) == 5
    (base / "list_attr_celeba.txt").write_text("7\nMale Smiling Young\n000001.jpg 1 1 1\n")
    with pytest.raises(DataError, match="declares 7"):
        load_celeba(base)
    (base / "list_attr_celeba.txt").write_text("1\nMale Smiling Young\n000001.jpg 1 1\n")
    with pytest.raises(DataError, match="expected 4 fields"):
        load_celeba(base)


def test_random_subset(mnist):
    train, _ = mnist
    a, b = train.random_subset(100), train.random_subset(300)
    assert len(a) == 100 and len(b) == 300
    # a prefix of the larger draw
    assert torch.equal(a.x, b.x[:100]) and torch.equal(a.y, b.y[:100])
    assert torch.equal(train.random_subset(100).x, a.x)  # deterministic
    assert not torch.equal(train.random_subset(100, seed=1).x, a.x)
    for bad in (0, len(train) + 1):
        with pytest.raises(ValueError, match="outside"):
            train.random_subset(bad)


def test_n_train_budget_trains_on_the_subset(tmp_path, monkeypatch):
    """``get_or_train(..., n_train=n)`` trains on ``random_subset(n)`` under its own cache key; without
    it (or with None) the key is the default one, so existing caches stay valid."""
    from uno.unlearn import train as tr

    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path))
    seen = []

    def fake_train_judge(model, data, **kw):
        seen.append((len(data), kw.get("epochs")))
        return model

    monkeypatch.setattr(tr, "train_judge", fake_train_judge)
    _, p_default = tr.get_or_train("judge", quiet=True, epochs=1)
    _, p_none = tr.get_or_train("judge", quiet=True, epochs=1, n_train=None)
    _, p_sub = tr.get_or_train("judge", quiet=True, epochs=1, n_train=500)
    assert p_none == p_default and p_sub != p_default
    assert seen == [(8000, 1), (500, 1)]  # the second call loaded the cached default
