"""Engine kinds: the base of their settings classes, and the registry they enter by being defined.

Each engine kind is one msgspec Struct, a subclass of ``EngineKind`` tagged with the kind's name
(``class CpuEngineSettings(EngineKind, tag="cpu")``), in a module of its own: ``kind_NAME.py`` in this
folder (``kind_fake.py``, ``kind_cpu.py``, ``kind_edgetpu.py``). The class holds the keys of its
``[engine.NAME]`` table of the config (with their ranges and descriptions), builds its engine and opens
its device pool. Defining it registers it (``EngineKind.__init_subclass__``), as Frigate's detector
plugins are found: the config's ``[engine.NAME]`` tables, the engines that ``pipeline.engine`` and
``[placement]`` accept, and ``engine_kind(data)`` all come from the registry, so adding an engine kind
is adding one file and nothing else.

The kind modules are found once, on the first use of the registry (``ENGINE_KINDS``, ``KINDS``,
``AnyEngineKind``, ``engine_kind``), by scanning this folder for ``kind_*`` modules
(``pkgutil.iter_modules``) and then each folder of ``$EDGEPIPE_ENGINE_KINDS`` (a path list, like
``$PATH``) for ``kind_*.py`` files: engine kinds kept outside the repository. An environment variable
and not a config key, because the config's own type is built from the registry. The kinds are listed
(in messages, ``--help`` and the config) by their ``rank``, then by name.

``engine_kind(data)`` reads plain data by its ``type``; an unknown type or a key of another kind is an
``EngineError`` naming it. Settings are plans: the faults a fake engine injects are ``FaultPlan`` s and
the invokes are counted by the ``FaultCounter`` of the actor that owns the engine.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Annotated, Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import msgspec
from msgspec import Meta

from edgepipe.models.engines.devices import DeviceModel, DevicePool
from edgepipe.models.engines.engine import Engine, EngineError, FaultCounter, FaultPlan
from edgepipe.models.spec import ModelSpec

Threads = Annotated[int, Meta(ge=1, le=64, description="LiteRT interpreter threads")]
KINDS_PATH_ENV = "EDGEPIPE_ENGINE_KINDS"  # more folders of kind_*.py files, os.pathsep between them
KIND_PREFIX = "kind_"


class EngineKind(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """The settings of one engine kind; a subclass per kind, tagged with the kind's name."""

    #: where the kind is listed among the others (then by name); the built-in ones come first
    rank: ClassVar[int] = 100

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _DEFINED.append(cls)  # msgspec sets the tag after this hook: the registry reads it when it is used

    @property
    def kind(self) -> str:
        return str(self.__struct_config__.tag)

    def device_model(self, spec: ModelSpec) -> DeviceModel:
        """How ``spec`` occupies a device (its parameters, its expected time)."""
        return DeviceModel(spec.name, spec.tpu_param_mb, est_ms=spec.tpu_ms or 5.0)

    def device_names(self) -> List[str]:
        """The devices an engine of this kind runs on (none: the CPU)."""
        return []

    def open_pool(self) -> Optional[DevicePool]:
        """The devices this kind runs on, claimed for this process (None: the CPU)."""
        return None

    def for_group(self, tpu: str) -> "EngineKind":
        """These settings in a process group that owns accelerator ``tpu`` ("" = none named)."""
        return self

    def for_auto(self) -> "EngineKind":
        """These settings for a role ``auto`` placed on this kind (``placement.RolePlacement.auto``)."""
        return self

    def fault_plan(self, actor: str) -> Optional[FaultPlan]:
        """The faults ``actor`` asked for (only the fake engine injects any)."""
        return None

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        """An unloaded engine of this kind for ``spec``."""
        raise NotImplementedError


_DEFINED: List[type] = []  # every EngineKind subclass, in the order they were defined
_REGISTRY: Dict[str, Any] = {}  # tag -> class, filled once by kinds()


def kind_folders() -> List[str]:
    """The folders scanned for kind modules: this package's, then those of ``$EDGEPIPE_ENGINE_KINDS``."""
    extra = [p for p in os.environ.get(KINDS_PATH_ENV, "").split(os.pathsep) if p]
    return [os.path.dirname(os.path.abspath(__file__))] + extra


def _import_kinds() -> None:
    """Import every kind module: this package's ``kind_*`` modules, then ``kind_*.py`` of the extra folders."""
    package = __name__.rpartition(".")[0]
    here, *extra = kind_folders()
    for info in pkgutil.iter_modules([here]):
        if info.name.startswith(KIND_PREFIX):
            # the plugin scan: the kind modules import this one, so they are found here, at first use
            importlib.import_module("%s.%s" % (package, info.name))
    for folder in extra:
        if not os.path.isdir(folder):
            raise EngineError("%s: %s is not a folder" % (KINDS_PATH_ENV, folder))
        for info in pkgutil.iter_modules([folder]):
            if not info.name.startswith(KIND_PREFIX):
                continue
            name = "edgepipe_engine_kinds.%s" % info.name
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, os.path.join(folder, info.name + ".py"))
            if spec is None or spec.loader is None:
                raise EngineError("%s: cannot import %s" % (KINDS_PATH_ENV, os.path.join(folder, info.name)))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                # the plugin scan, outside the package: a kind module kept in a folder of its own
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise


def kinds() -> Dict[str, Any]:
    """Engine kind name -> its settings class, in listing order (the kind modules are imported on first use)."""
    if not _REGISTRY:
        _import_kinds()
        found: Dict[str, Any] = {}
        for cls in _DEFINED:
            tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
            if tag is None:
                continue  # an intermediate base class, not a kind
            if tag in found and found[tag] is not cls:
                raise EngineError("engine kind %r is defined twice: in %s and in %s"
                                  % (tag, found[tag].__module__, cls.__module__))
            found[tag] = cls
        for tag in sorted(found, key=lambda t: (found[t].rank, t)):
            _REGISTRY[tag] = found[tag]
    return _REGISTRY


def engine_kinds() -> Tuple[str, ...]:
    """The names of the engine kinds, in listing order (``fake``, ``cpu``, ``edgetpu``, then any others)."""
    return tuple(kinds())


def any_engine_kind() -> Any:
    """The tagged union of the kinds' settings classes (msgspec picks the class by ``type``)."""
    return Union[tuple(kinds().values())]  # type: ignore[return-value]


def __getattr__(name: str) -> Any:
    """The registry's views as names of this module (``ENGINE_KINDS``, ``KINDS``, ``AnyEngineKind``), and each
    kind's settings class by its class name (``CpuEngineSettings``), built on first use (PEP 562)."""
    if name == "ENGINE_KINDS":
        return engine_kinds()
    if name == "KINDS":
        return dict(kinds())
    if name == "AnyEngineKind":
        return any_engine_kind()
    if not name.startswith("__"):
        for cls in kinds().values():
            if cls.__name__ == name:
                return cls
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def engine_kind(data: Dict[str, Any]) -> EngineKind:
    """Plain data with a ``type`` key -> the settings of that kind; EngineError naming a bad type or key."""
    kind = data.get("type")
    cls = kinds().get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise EngineError("engine type %r is unknown (known: %s)" % (kind, ", ".join(engine_kinds())))
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        field = str(exc).partition("unknown field `")[2].rstrip("`")
        if field:
            raise EngineError("engine type %r has no key %r (its keys: %s)"
                              % (kind, field, ", ".join(cls.__struct_fields__))) from None
        raise EngineError("engine type %r: %s" % (kind, exc)) from None
