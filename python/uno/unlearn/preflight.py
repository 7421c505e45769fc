"""Checks that run before any model or data is loaded: numeric options, output paths, the extra.

Every check raises :class:`~uno.unlearn.errors.UnoUserError` with one line that names the option (by its
command-line flag) and what was seen, so that the ``uno`` command prints ``uno: error: ...``, exits with
status 2 and has written nothing. The library entry points (``run.unlearn``, ``demo.demo``) call the same
checks, so a bad value from Python fails the same way.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from uno.unlearn.errors import UnoUserError

#: The packages of the ``[unlearn]`` extra (``pip install "uno-kernels[unlearn]"``).
EXTRA_MODULES = ("safetensors", "matplotlib", "scipy", "tqdm")


def require_extra(command: str, modules: Sequence[str] = EXTRA_MODULES) -> None:
    """Fail with the install line when a package of the ``[unlearn]`` extra is missing.

    Raises:
        UnoUserError: ``command`` needs the extra and one of ``modules`` cannot be imported.
    """
    missing = [m for m in modules if not _importable(m)]
    if missing:
        raise UnoUserError(
            f"`uno {command}` needs the [unlearn] extra (missing: {', '.join(missing)}); "
            'install it with: pip install "uno-kernels[unlearn]"'
        )


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return False


def int_at_least(flag: str, value: Any, low: int, *, optional: bool = False) -> None:
    """``value`` is an int ``>= low`` (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UnoUserError(f"{flag} must be an integer >= {low}, got {value!r}")


def seed(flag: str, value: Any) -> None:
    """``value`` is a seed torch accepts: an int in ``[0, 2**63)``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise UnoUserError(f"{flag} must be an integer in [0, 2**63), got {value!r}")


def real(
    flag: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
) -> None:
    """``value`` is a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and value <= high
    )
    if not ok:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        hi = f" and <= {high:g}" if math.isfinite(high) else ""
        raise UnoUserError(f"{flag} must be a finite number {lo}{hi}, got {value!r}")


def out_dir(flag: str, path: Optional[str]) -> None:
    """``path`` is (or can be created as) a folder this process can write to.

    Walks up to the nearest existing ancestor, which must be a folder, and creates (then removes) a probe
    file there: the only reliable test, since root ignores permission bits but not a read-only mount or
    an immutable folder. Nothing is left behind and no folder is created.

    Raises:
        UnoUserError: ``path`` is a file, lies under a file, or its folder is not writable (or cannot
            even be looked at).
    """
    if path is None:
        return
    if not str(path).strip():
        raise UnoUserError(f"{flag} must be a folder path, got an empty string")
    p = Path(path).expanduser()
    try:
        if p.exists() and not p.is_dir():
            raise UnoUserError(f"{flag} {path} is a file, not a folder")
        folder = _existing_folder_above(flag, path, p)
    except OSError as e:  # e.g. no search permission on a parent
        raise UnoUserError(f"{flag} {path} cannot be checked ({e.strerror or e})") from e
    _probe_write(flag, path, folder)


def out_file(flag: str, path: Optional[str]) -> None:
    """``path`` names a file that can be written (its folder exists or can be created, and is writable)."""
    if path is None:
        return
    if not str(path).strip():
        raise UnoUserError(f"{flag} must be a file path, got an empty string")
    p = Path(path).expanduser()
    if p.is_dir():
        raise UnoUserError(f"{flag} {path} is a folder, not a file")
    _existing_folder_above(flag, path, p.parent)  # the file's own name in the message
    out_dir(flag, str(p.parent))


def _existing_folder_above(flag: str, path: str, p: Path) -> Path:
    """The nearest existing ``p`` or ancestor of it, which must be a folder."""
    base = p
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise UnoUserError(f"{flag} {path} cannot be created: {base} is a file")
    return base


def _probe_write(flag: str, path: str, folder: Path) -> None:
    # A probe, not os.access: the same answer as the run's own writes (permission bits for a user;
    # for root, a read-only mount or an immutable folder), with the system's reason. The folder's times
    # are put back, so that a rejected run leaves it exactly as it was.
    st = folder.stat()
    try:
        fd, probe = tempfile.mkstemp(prefix=".uno-probe-", dir=folder)
    except OSError as e:
        raise UnoUserError(f"{flag} {path} is not writable ({e.strerror or e} in {folder})") from e
    os.close(fd)
    os.unlink(probe)
    try:
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    except (
        OSError
    ):  # setting the times needs ownership (a shared, group-writable folder): best effort
        pass


def existing_file(flag: str, path: Optional[str]) -> None:
    """``path`` is ``None`` or an existing file."""
    if path is not None and not is_file(flag, path):
        what = "is a folder, not a file" if Path(path).expanduser().is_dir() else "does not exist"
        raise UnoUserError(f"{flag} {path} {what}")


def existing_path(flag: str, path: Optional[str]) -> None:
    """``path`` is ``None`` or an existing file or folder."""
    if path is None:
        return
    try:
        ok = Path(path).expanduser().exists()
    except OSError as e:
        raise UnoUserError(f"{flag} {path} cannot be checked ({e.strerror or e})") from e
    if not ok:
        raise UnoUserError(f"{flag}: data path does not exist: {path}")


def is_file(flag: str, path: str) -> bool:
    """Whether ``path`` is a file; a path that cannot be looked at is an error naming ``flag``."""
    try:
        return Path(path).expanduser().is_file()
    except OSError as e:
        raise UnoUserError(f"{flag} {path} cannot be checked ({e.strerror or e})") from e
