"""Lazy re-exports for package ``__init__`` files (PEP 562 module ``__getattr__``).

A package lists what it re-exports as ``{module: (name, …)}``; importing the package loads nothing else, and the
first ``from paywire.x import Name`` imports the one module that defines ``Name``. So ``import paywire.server``
does not start a server, a database driver or a chain, and a core module that imports a sibling through its
package pays only for that sibling. Each package also imports the same names under ``TYPE_CHECKING`` so type
checkers and IDEs see them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; a name equal to its module's last part is that submodule.

    ``__getattr__`` is typed ``object`` so a type checker flags a name missing from the ``TYPE_CHECKING`` imports.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module == f"{package}.{name}" else getattr(loaded, name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
