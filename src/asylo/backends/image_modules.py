"""Import an enclave's Python modules from its verified image, never from the host's `sys.path`.

Each loaded enclave gets a private package name (`_asylo_enclave_<n>`) under which its files are importable, so two
instances of one image have separate module state, as two enclaves have separate memory, and a file on the host's
disk can never stand in for a file of the image. Modules of the image refer to each other with relative imports
(`from . import helpers`); installed libraries (`asylo.trusted`, `cryptography`) are imported as usual.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import itertools
import sys
import threading
from collections.abc import Mapping, Sequence
from types import CodeType, ModuleType

from asylo.status import InvalidArgumentError

_instances = itertools.count(1)
_meta_path_lock = threading.Lock()


class _ImageFinder(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds and loads `<prefix>.<module>` from the image's files; ignores every other name."""

    def __init__(self, prefix: str, files: Mapping[str, bytes], label: str) -> None:
        self.prefix = prefix
        self._files = files
        self._label = label

    def _locate(self, fullname: str) -> tuple[str | None, bool] | None:
        """(path of the source or None for an empty package, is_package) for a name under the prefix."""
        if fullname == self.prefix:
            return ("__init__.py" if "__init__.py" in self._files else None), True
        if not fullname.startswith(self.prefix + "."):
            return None
        base = fullname[len(self.prefix) + 1:].replace(".", "/")
        if f"{base}/__init__.py" in self._files:
            return f"{base}/__init__.py", True
        if f"{base}.py" in self._files:
            return f"{base}.py", False
        if any(path.startswith(base + "/") for path in self._files):
            return None, True  # a directory without __init__.py: a namespace-like package
        return None

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        located = self._locate(fullname)
        if located is None:
            return None
        source_path, is_package = located
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=self._origin(source_path), is_package=is_package)
        spec.has_location = False
        return spec

    def _origin(self, source_path: str | None) -> str:
        return f"<enclave {self._label}>/{source_path or ''}"

    def get_source(self, fullname: str) -> str | None:
        located = self._locate(fullname)
        if located is None:
            raise ImportError(f"{fullname} is not in the enclave image", name=fullname)
        source_path = located[0]
        if source_path is None:
            return ""
        return self._files[source_path].decode("utf-8")

    def get_code(self, fullname: str) -> CodeType:
        located = self._locate(fullname)
        source = self.get_source(fullname) or ""
        return compile(source, self._origin(located[0] if located else None), "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(module.__name__), module.__dict__)  # noqa: S102 - code from a verified, signed image


class ImageModules:
    """The enclave image's modules, importable for as long as the enclave is loaded."""

    def __init__(self, files: Mapping[str, bytes], label: str) -> None:
        self.prefix = f"_asylo_enclave_{next(_instances)}"
        self._finder = _ImageFinder(self.prefix, files, label)
        with _meta_path_lock:
            # Replaced, not changed in place: an import running in another thread iterates the old list.
            sys.meta_path = [self._finder, *sys.meta_path]

    def load_attribute(self, entry_point: str) -> object:
        """Import `module:Attribute` (module relative to the image root) and return the attribute."""
        module_name, _, attribute = entry_point.partition(":")
        if not module_name or not attribute:
            raise InvalidArgumentError(f"entry point {entry_point!r} is not of the form module:Class")
        module = importlib.import_module(f"{self.prefix}.{module_name}")
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise InvalidArgumentError(f"entry point {entry_point!r}: module {module_name!r} has no "
                                       f"{attribute!r}") from None

    def unload(self) -> None:
        """Forget the image's modules: remove the finder and every module imported under the prefix."""
        with _meta_path_lock:
            sys.meta_path = [finder for finder in sys.meta_path if finder is not self._finder]
            # list() copies sys.modules in one step, so an import in another thread cannot change it under us.
            for name in [n for n in list(sys.modules) if n == self.prefix or n.startswith(self.prefix + ".")]:
                sys.modules.pop(name, None)
