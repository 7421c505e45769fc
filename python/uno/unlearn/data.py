"""Data readers: MNIST in IDX format (embedded default or a user path) and CelebA (torchvision layout).

Images are returned as float32 tensors of shape ``(N, C, H, W)`` with values in ``[0, 1]``.
Nothing is downloaded: every reader works on files already on disk.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from uno.unlearn.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: IDX type codes → numpy dtypes (big-endian as the format stores them).
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: Split of the embedded 10,000 digits into a training and a held-out part.
EMBEDDED_HELDOUT = 2000
SPLIT_SEED = 0

MNIST_CLASSES = tuple(str(i) for i in range(10))


def embedded_mnist_dir() -> Path:
    """Folder of the MNIST files shipped with the package (the MNIST test set; CC BY-SA 3.0)."""
    return Path(__file__).resolve().parent.parent / "data" / "mnist"


@dataclass
class ImageData:
    """A labelled image set.

    Attributes:
        x: float32 ``(N, C, H, W)`` in ``[0, 1]``.
        y: int64 ``(N,)`` class labels, or ``(N, A)`` 0/1 attributes.
        names: class names (``len == n_classes``) or attribute names (``len == A``).
        kind: ``"class"`` or ``"attribute"``.
    """

    x: Tensor
    y: Tensor
    names: tuple[str, ...]
    kind: str = "class"
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: Tensor) -> ImageData:
        return ImageData(
            self.x[idx], self.y[idx], self.names, self.kind, self.source, dict(self.meta)
        )

    def random_subset(self, n: int, seed: int = 0) -> ImageData:
        """``n`` samples drawn without replacement by a fixed permutation (the same ``n`` and ``seed``
        give the same samples; a smaller ``n`` gives a prefix of a larger one's draw)."""
        if not 0 < n <= len(self):
            raise ValueError(f"n={n} outside [1, {len(self)}] (the data has {len(self)} samples)")
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n])

    def forget_mask(self, targets: Sequence[int]) -> Tensor:
        """Bool ``(N,)``: True for samples in any forget class (or with any forget attribute set)."""
        t = torch.as_tensor(list(targets), dtype=torch.long)
        if self.kind == "class":
            return torch.isin(self.y, t)
        return (self.y[:, t] > 0).any(dim=1)


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw).

    Args:
        path: the file.

    Returns:
        An array with the file's shape and dtype (native byte order).

    Raises:
        DataError: missing file, bad magic number, unknown type code or wrong length.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"IDX file not found: {p}")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{p}: corrupt gzip stream ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p}: not an IDX file (magic number must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{p}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{p}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dt = _IDX_DTYPES[code]
    n = int(np.prod(shape))
    start = 4 + 4 * ndim
    if len(raw) - start != n * dt.itemsize:
        raise DataError(
            f"{p}: IDX header says shape {shape} ({n * dt.itemsize} bytes of data), "
            f"file holds {len(raw) - start} bytes"
        )
    arr = np.frombuffer(raw, dtype=dt, count=n, offset=start).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=True)


def _find(root: Path, stem: str) -> Path:
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        f"no {stem}[.gz] under {root} (looked in {root}/MNIST/raw, {root}/raw and {root})"
    )


def _mnist_pair(root: Path, prefix: str) -> ImageData:
    xi = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    yi = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if xi.ndim != 3 or yi.ndim != 1 or xi.shape[0] != yi.shape[0]:
        raise DataError(
            f"{root}: MNIST images {xi.shape} and labels {yi.shape} do not match "
            "(expected (N, H, W) and (N,))"
        )
    if yi.size and (yi.min() < 0 or yi.max() > 9):
        raise DataError(f"{root}: MNIST labels outside 0..9")
    x = torch.from_numpy(xi.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(yi.astype(np.int64))
    return ImageData(x, y, MNIST_CLASSES, "class", str(root))


def split_indices(n: int, n_heldout: int, seed: int = SPLIT_SEED) -> tuple[Tensor, Tensor]:
    """Deterministic train/held-out split (same on every machine: numpy's PCG64 with a fixed seed)."""
    perm = np.random.default_rng(seed).permutation(n)
    return torch.from_numpy(np.sort(perm[n_heldout:])), torch.from_numpy(np.sort(perm[:n_heldout]))


def load_mnist(root: Optional[PathLike] = None) -> tuple[ImageData, ImageData]:
    """MNIST as (train, held-out).

    Args:
        root: ``None`` for the embedded default (the 10,000-digit test set, split 8,000 / 2,000
            deterministically); else a folder with the IDX files in torchvision's layout
            (``<root>/MNIST/raw/``) or flat. With the training files present the split is the
            official one (60,000 train, 10,000 test as held-out); with only the t10k files it is
            split as the embedded default.

    Returns:
        ``(train, heldout)``, each an :class:`ImageData` with ``x`` float32 ``(N, 1, 28, 28)``.
    """
    if root is None:
        base = embedded_mnist_dir()
    else:
        base = Path(root).expanduser()
        if not base.exists():
            raise DataError(f"data path does not exist: {base}")
    try:
        train = _mnist_pair(base, "train")
        test = _mnist_pair(base, "t10k")
        return train, test
    except DataError as e:
        if "no train-" not in str(e):
            raise
    full = _mnist_pair(base, "t10k")
    tr, he = split_indices(len(full), min(EMBEDDED_HELDOUT, len(full) // 5))
    return full.subset(tr), full.subset(he)


def _read_image(path: Path) -> np.ndarray:
    """Read an image file as float32 ``(H, W, 3)`` in [0, 1] (PIL if installed, else matplotlib)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except ImportError:  # pragma: no cover - PIL is usually present
        import matplotlib.image as mpimg

        a = np.asarray(mpimg.imread(path), dtype=np.float32)
        if a.max() > 1.0:
            a = a / 255.0
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        a = a[..., :3]
    except Exception as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    return a


def load_celeba(
    root: PathLike, size: int = 64, max_images: Optional[int] = None, crop: Optional[int] = 148
) -> tuple[ImageData, ImageData]:
    """CelebA in torchvision's folder layout, as (train, held-out).

    Layout: ``<root>/celeba/img_align_celeba/*.jpg`` and ``<root>/celeba/list_attr_celeba.txt``
    (``<root>`` may also be the ``celeba`` folder itself); ``list_eval_partition.txt`` is used when present
    (0 = train, 1/2 = held-out), else a deterministic 80/20 split.

    Args:
        root: the data folder.
        size: output side (images are centre-cropped to ``crop`` then resized to ``size × size``).
        max_images: read at most this many (in file order), for quick runs.
        crop: centre-crop side before resizing (torchvision's usual 148 for 178×218 CelebA); ``None``
            crops to the shorter side.

    Returns:
        ``(train, heldout)`` with ``x`` float32 ``(N, 3, size, size)`` and ``y`` int64 ``(N, 40)`` 0/1.
    """
    base = Path(root).expanduser()
    if (base / "celeba").is_dir():
        base = base / "celeba"
    attr_file = base / "list_attr_celeba.txt"
    img_dir = base / "img_align_celeba"
    if not attr_file.is_file() or not img_dir.is_dir():
        raise DataError(
            f"CelebA not found under {root}: need img_align_celeba/ and list_attr_celeba.txt "
            "(torchvision layout)"
        )
    lines = attr_file.read_text().splitlines()
    try:
        n_declared = int(lines[0].strip())
        names = tuple(lines[1].split())
    except (IndexError, ValueError) as e:
        raise DataError(f"{attr_file}: malformed header (count line, then attribute names)") from e
    files: list[str] = []
    rows: list[list[int]] = []
    for i, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataError(f"{attr_file}:{i}: expected {len(names) + 1} fields, got {len(parts)}")
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError as e:
            raise DataError(f"{attr_file}:{i}: attribute values must be -1 or 1") from e
        files.append(parts[0])
        rows.append([1 if v > 0 else 0 for v in vals])
    if len(files) != n_declared:
        raise DataError(
            f"{attr_file}: header declares {n_declared} images, file lists {len(files)}"
        )
    if max_images is not None:
        files, rows = files[:max_images], rows[:max_images]
    imgs = []
    for f in files:
        a = torch.from_numpy(_read_image(img_dir / f)).permute(2, 0, 1)
        h, w = a.shape[1:]
        c = min(h, w) if crop is None else min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        a = a[:, top : top + c, left : left + c].unsqueeze(0)
        a = torch.nn.functional.interpolate(
            a, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        imgs.append(a.clamp_(0, 1))
    if not imgs:
        raise DataError(f"{attr_file}: no images listed")
    x = torch.cat(imgs)
    y = torch.tensor(rows, dtype=torch.long)
    data = ImageData(x, y, names, "attribute", str(root))
    part = base / "list_eval_partition.txt"
    if part.is_file():
        which = {}
        for line in part.read_text().splitlines():
            p = line.split()
            if len(p) == 2:
                which[p[0]] = int(p[1])
        mask = torch.tensor([which.get(f, 0) == 0 for f in files])
        tr, he = mask.nonzero().flatten(), (~mask).nonzero().flatten()
    else:
        tr, he = split_indices(len(files), max(1, len(files) // 5))
    return data.subset(tr), data.subset(he)


def resolve_targets(data: ImageData, forget: Sequence[str]) -> list[int]:
    """Map user forget targets (class labels/names or attribute names) to indices.

    Raises:
        DataError: a target that is not a class or attribute of the data set.
    """
    out: list[int] = []
    for t in forget:
        if t in data.names:
            out.append(data.names.index(t))
        elif data.kind == "class" and t.lstrip("-").isdigit() and 0 <= int(t) < len(data.names):
            out.append(int(t))
        else:
            what = "class" if data.kind == "class" else "attribute"
            raise DataError(f"unknown {what} {t!r}; choose from {', '.join(data.names)}")
    if not out:
        raise DataError("no forget target given")
    return sorted(set(out))
