"""Method registry: name → (class, keyword arguments). ``<name>-hat`` variants are registered alongside."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from uno.unlearn.errors import UnoUserError

if TYPE_CHECKING:
    from uno.unlearn.methods.base import Method

_REGISTRY: dict[str, tuple[type[Method], dict[str, Any]]] = {}


def register(name: str, **defaults: Any) -> Callable[[Any], Any]:
    """Class decorator: register a method under ``name`` (and ``name-hat`` if ``cls.has_hat``).

    ``defaults`` declares the method's hyper-parameters and their defaults (``Method.defaults``;
    without any, the class keeps the ones it inherits).
    """

    def deco(cls: Any) -> Any:
        cls.name = name
        if defaults:
            cls.defaults = defaults
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


def from_config(cfg: Any) -> Any:
    """The method ``cfg.method`` with the hyper-parameters ``cfg`` sets (see ``Method.options``).

    Raises:
        UnoUserError: unknown name (the message lists the known ones).
    """
    if cfg.method not in _REGISTRY:
        create(cfg.method)  # raises the error that lists the known names
    cls, _ = _REGISTRY[cfg.method]
    return create(cfg.method, **cls.options(cfg))
