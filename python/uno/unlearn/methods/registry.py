"""Method registry: name → (class, keyword arguments). ``<name>-hat`` variants are registered alongside."""

from __future__ import annotations

from typing import Any, Callable

from uno.unlearn.errors import UnoUserError

_REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register a method under ``name`` (and ``name-hat`` if ``cls.has_hat``)."""

    def deco(cls: type) -> type:
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = (cls, {"hat": False})
        if getattr(cls, "has_hat", False):
            _REGISTRY[name + "-hat"] = (cls, {"hat": True})
        return cls

    return deco


def names() -> list[str]:
    """All registered method names."""
    return sorted(_REGISTRY)


def create(name: str, **hparams: Any) -> Any:
    """Instantiate a method by name.

    Raises:
        UnoUserError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise UnoUserError(f"unknown method {name!r}; choose from {', '.join(names())}")
    cls, kw = _REGISTRY[name]
    return cls(**kw, **hparams)
