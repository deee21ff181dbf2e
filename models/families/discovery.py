"""Finding the model families: every module of this folder, and of the plugin folders, imported once.

A family registers itself when its module is imported (``Family.__init_subclass__``,
``models/families/family.py``), so nothing lists the families by hand: ``discover``
imports every module that ``pkgutil.iter_modules`` finds in this package's folder,
then every module of the plugin folders, each folder once. The families of a
plugin folder are known to every process that reads the same environment (a
pipeline's child processes inherit it):

- ``EDGEPIPE_PLUGINS``: folders, separated by ``os.pathsep``; each ``NAME.py`` (or
  package ``NAME/``) in them is imported as the module ``edgepipe_plugin_NAME``.
  Such a module defines its family class, and may add its models to the
  manifest (``models.store.manifest.add``).

``family_of`` looks a model's family up (discovering first); ``models/registry.py``
builds the family objects, and the fake engine asks the class what to fake.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import threading
from typing import List, Mapping, Optional, Sequence, Set, Type

from edgepipe.models import families
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.families.family import FAMILIES, Family
from edgepipe.models.spec import ModelSpec

ENV_PLUGINS = "EDGEPIPE_PLUGINS"
PLUGIN_PREFIX = "edgepipe_plugin_"

_lock = threading.RLock()
_scanned: Set[str] = set()  # the folders imported: this package's, then the plugin folders (real paths)


def plugin_folders() -> List[str]:
    """The folders named by ``EDGEPIPE_PLUGINS``, in order."""
    return [p for p in os.environ.get(ENV_PLUGINS, "").split(os.pathsep) if p.strip()]


def discover(folders: Sequence[str] = ()) -> None:
    """Import every family module not imported yet: this package's, then those of ``EDGEPIPE_PLUGINS``'s
    folders and of ``folders``. Each folder is scanned once; a module that fails to import is an error."""
    with _lock:
        if families.__name__ not in _scanned:
            for info in pkgutil.iter_modules(families.__path__, families.__name__ + "."):
                # the module names are read from the folder: the families register themselves on import
                importlib.import_module(info.name)
            _scanned.add(families.__name__)
        for folder in plugin_folders() + [str(f) for f in folders]:
            real = os.path.realpath(os.path.expanduser(folder))
            if real in _scanned:
                continue
            if not os.path.isdir(real):
                raise EngineError("model family plugin folder %s (%s) is not a folder" % (folder, ENV_PLUGINS))
            for info in sorted(pkgutil.iter_modules([real]), key=lambda i: i.name):
                _import_plugin(real, info)
            _scanned.add(real)


def _import_plugin(folder: str, info: pkgutil.ModuleInfo) -> None:
    """Import one module of a plugin folder as ``edgepipe_plugin_NAME`` (not on ``sys.path``: its name cannot
    shadow a library's)."""
    name = PLUGIN_PREFIX + info.name
    found = info.module_finder.find_spec(info.name)  # type: ignore[call-arg]
    if found is None or found.origin is None:
        raise EngineError("model family plugin %s in %s: not an importable module" % (info.name, folder))
    if name in sys.modules:
        raise EngineError("model family plugin %s in %s: a module %s is already imported (two plugin folders "
                          "with a module of the same name?)" % (info.name, folder, name))
    spec = importlib.util.spec_from_file_location(name, found.origin,
                                                  submodule_search_locations=found.submodule_search_locations)
    if spec is None or spec.loader is None:
        raise EngineError("model family plugin %s in %s: not an importable module" % (info.name, folder))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # msgspec and dataclasses resolve a class's annotations through its module
    try:
        # a plugin file is imported from its path (no import statement can name it)
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise EngineError("model family plugin %s failed to import: %s: %s"
                          % (found.origin, type(exc).__name__, exc)) from exc


def family_of(spec: ModelSpec, table: Optional[Mapping[str, Type[Family]]] = None,
              what: str = "a model family") -> Type[Family]:
    """The family class of ``spec`` (in ``table``: one role's, else any role's); EngineError naming the model
    and the known families when there is none."""
    discover()
    table = FAMILIES if table is None else table
    try:
        return table[spec.family]
    except KeyError:
        raise EngineError("model %r (family %r) is not %s; known: %s"
                          % (spec.name, spec.family, what, ", ".join(sorted(table)))) from None
