"""Unlearning methods: one file per method, a subclass of ``UnlearningMethod`` that declares what it is (class
attributes, defaults on the base class) and implements ``unlearning_loss(batch)``.

The registry is derived from the classes: every method class defined in a module of this package, by its class
name, the one name users type (``--model Dispersion``, ``unlearnkit demo --methods Dispersion``) and every tool
prints. The snake_case of that name (``dispersion``, the registry key before issue 14) still resolves, as an alias.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys


class MethodRegistry(dict):
    """Methods by class name, in name order; looking up an old snake_case key (``dispersion``) gives its class."""

    def __missing__(self, name: str) -> type:
        for key, cls in self.items():
            if alias(key) == name:
                return cls
        from unlearnkit.errors import ConfigError

        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(self)}")


def alias(name: str) -> str:
    """The snake_case alias of a class name: ``GradientAscent`` → ``gradient_ascent``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def load_all() -> MethodRegistry:
    """Every method (``Pretrain``, ``Retrain`` and each unlearning method), importing every module of this
    package first. A method is a ``FaceModule`` subclass defined here, importable by its name, whose unlearning
    loss (for an ``UnlearningMethod``) is implemented."""
    from unlearnkit.errors import ConfigError
    from unlearnkit.methods.base import FaceModule, UnlearningMethod

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type] = {}
    pending = list(FaceModule.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if (not cls.__module__.startswith(f"{__name__}.")
                or getattr(sys.modules.get(cls.__module__), cls.__name__, None) is not cls  # e.g. a local class
                or (issubclass(cls, UnlearningMethod) and cls.unlearning_loss is UnlearningMethod.unlearning_loss)):
            continue
        if found.setdefault(cls.__name__, cls) is not cls:
            raise ConfigError(f"two methods are named {cls.__name__} ({found[cls.__name__].__module__} and "
                              f"{cls.__module__}): rename one, the class name is the method's name")
    return MethodRegistry(sorted(found.items()))


def unlearning_methods() -> MethodRegistry:
    """The registry's unlearning methods (every method but ``Pretrain`` and ``Retrain``)."""
    from unlearnkit.methods.base import UnlearningMethod

    return MethodRegistry({name: cls for name, cls in load_all().items() if issubclass(cls, UnlearningMethod)})


def label_free_comparison() -> dict[str, bool]:
    """The methods the label-free protocols (sample, quality) compare, each with whether it runs as its ``labels:
    pseudo`` variant: the label-free methods (``needs_labels = False``, e.g. CURE) first, then the label-free
    baselines (``label_free_baseline = True``), each group in name order."""
    methods = unlearning_methods()
    label_free = {name: False for name, cls in methods.items() if not cls.needs_labels and not cls.label_free_baseline}
    return {**label_free, **{name: True for name, cls in methods.items() if cls.label_free_baseline}}


def method_defaults(cls: type) -> dict:
    """The defaults ``cls`` resolves to: each class's own signature overriding its bases' (e.g. its lr)."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        if klass is object or "__init__" not in vars(klass):
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():
            if param.default is not inspect.Parameter.empty and name != "self":
                defaults[name] = param.default
    return defaults
