"""Node functions imported when a node runs, not when Kedro loads the project.

Kedro imports every pipeline's ``pipeline.py`` (``find_pipelines``) whenever a project starts,
whichever pipeline runs; a ``pipeline.py`` that imports its nodes module at the top pulls in
torch, diffusers, matplotlib, ... for every ``kedro run``. ``lazy_module("pkg.nodes").fn`` is
a stand-in for ``pkg.nodes.fn`` that imports the module on the first call.

What the stand-in gives up: Kedro checks a node's inputs against the function's signature
when the node is built; the stand-in takes ``*args, **kwargs``, so a mismatch shows when the node
runs. ``tests/test_startup.py`` checks every node's real signature instead.

The module's dependencies are unchanged for ``tools/dvc_deps.py``: it lists every module of a
pipeline package (``nodes.py`` included) and what those import, whoever imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class LazyFunction:
    """``module.name``, imported on the first call; picklable (ParallelRunner sends nodes to workers)."""

    def __init__(self, module: str, name: str) -> None:
        self.__module__ = module
        self.__name__ = name
        self.__qualname__ = name
        # Kedro 1.7 reads a node function's type hints to validate typed ``params:`` inputs;
        # a stand-in has none to offer without importing its module (synthmed checks every
        # parameter block itself, synthmed.parameters). Without this attribute
        # ``typing.get_type_hints`` raises and Kedro logs a warning per lazy node and run.
        self.__annotations__: dict[str, Any] = {}
        self._function: Callable[..., Any] | None = None

    def resolve(self) -> Callable[..., Any]:
        """The real function (imports its module the first time)."""
        if self._function is None:
            module = importlib.import_module(self.__module__)
            try:
                self._function = getattr(module, self.__name__)
            except AttributeError:
                raise AttributeError(
                    f"Node function {self.__name__!r} not found in {self.__module__} "
                    f"({module.__file__}): fix the name in the pipeline's lazy_module(...) reference."
                ) from None
        return self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # The function itself is found again by name in the worker.
        return {**self.__dict__, "_function": None}

    def __repr__(self) -> str:
        return f"<lazy {self.__module__}.{self.__name__}>"


class LazyModule:
    """``lazy_module(name).fn`` is ``LazyFunction(name, "fn")``; the module is not imported here."""

    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, name: str) -> LazyFunction:
        if name.startswith("__"):
            raise AttributeError(name)
        return LazyFunction(self._module, name)


def lazy_module(module: str) -> LazyModule:
    """A stand-in for the module ``module`` whose attributes are ``LazyFunction`` s."""
    return LazyModule(module)


class LazyImport:
    """A stand-in for a heavy library's module (torch, pandas, scipy.ndimage, ...) that imports it
    on the first attribute access.

    The parameter check (``synthmed.parameters``) imports every module that defines a
    configuration dataclass before each ``kedro run``; with ``torch = lazy_import("torch")`` at
    the top of such a module instead of ``import torch``, importing it costs nothing until a
    function uses ``torch.<name>``. Names only used in annotations go under ``TYPE_CHECKING``
    instead; a module that needs the library at import time (an ``nn.Module`` subclass, a
    decorator such as ``@torch.no_grad()``) imports it as usual.
    """

    def __init__(self, module: str) -> None:
        self._lazy_name = module
        self._lazy_module: Any = None

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on the stand-in itself: every library attribute.
        if name.startswith("_lazy_"):
            raise AttributeError(name)
        if self._lazy_module is None:
            self._lazy_module = importlib.import_module(self._lazy_name)
        return getattr(self._lazy_module, name)

    def __repr__(self) -> str:
        state = "imported" if self._lazy_module is not None else "not imported yet"
        return f"<lazy import of {self._lazy_name} ({state})>"


def lazy_import(module: str) -> Any:
    """``module``, imported when one of its attributes is first used (see ``LazyImport``)."""
    return LazyImport(module)
