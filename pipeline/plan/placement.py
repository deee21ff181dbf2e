"""Placement: which engine (and which model, on which devices) each role runs on.

Each role (detector, fer, classifier) asks for an engine: ``[placement] ROLE``,
else ``pipeline.engine``. ``edgetpu``, ``cpu`` and ``fake`` are taken as they
are, except that a model with no Edge TPU file runs on the CPU (one warning
line). ``auto`` chooses between the accelerator (``engine.auto.accelerator``:
a real Edge TPU when one is present, or the fake one for benchmarks) and the
CPU, by predicting the whole pipeline's frame rate for every combination of
choices (``predict_fps``) from a per-model table of invoke times:

- the table ``bench models`` measured on this machine (cached per machine,
  see ``table_path``), or ``engine.auto.table``;
- otherwise the manifest's defaults (``tpu_ms``: the reference project's Edge
  TPU times; ``cpu_ms``: measured on the developers' machine).

A profile's ``fallback`` replaces a model whose file is neither found (model
folders, cache) nor downloadable by another, and the reason says so.
``auto`` never fakes a real source: when neither the accelerator nor the CPU
model is there, it runs the fake engine only on the synthetic source (whose
drawn faces the fake engine reads; the run prints a banner) and otherwise
refuses the run with one message (``model_files.MissingModelFiles``). With
``fetch`` (the run command), files that have a source are downloaded now and
the run is refused, before anything starts, when one still misses.

A real Edge TPU is "present" for a role when libedgetpu loads, a Coral is
attached, and a probe process builds the role's own Edge TPU model with the
delegate and invokes it once (``edgetpu_check.edgetpu_present``; all roles
are probed before any engine opens the device, each under the device's
claim). A role whose probe fails runs on the CPU and its reason is the
probe's error. A role ``auto`` put on the Edge TPU falls back to the CPU if
its engine still cannot load there (``RolePlacement.auto``: the engine's
fallback is the CPU whatever ``engine.edgetpu.fallback`` says): one warning
line says why, and the run goes on.

When the profile names another model for the accelerator than for the CPU
(Coral's SSD face detector on the TPU, BlazeFace on the CPU), ``auto`` keeps
the accelerator's, which is the profile's choice for machines that have one.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import socket
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgepipe.models.engines.devices import CACHE_MB
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.spec import ModelSpec
from edgepipe.models.store import manifest
from edgepipe.models.store.fetch import cache_dir, find_local
from edgepipe.pipeline.config.sections import Config, ConfigError
from edgepipe.pipeline.plan.edgetpu_check import edgetpu_attached, edgetpu_present, tpu_python
from edgepipe.pipeline.plan.model_files import file_available, is_synthetic, require_files

log = logging.getLogger("edgepipe.placement")



@dataclass
class RolePlacement:
    role: str
    engine: str  # fake | cpu | edgetpu
    model: str
    devices: List[str] = field(default_factory=list)  # accelerator devices ("fake:0", "edgetpu:usb:0")
    reason: str = ""
    auto: bool = False  # placed by ``auto``: on an Edge TPU that fails to load, the role runs on the CPU

    def describe(self) -> str:
        where = ", ".join(self.devices) if self.devices else self.engine
        return "%s %s on %s%s" % (self.role, self.model, where, " (%s)" % self.reason if self.reason else "")


# ---------------------------------------------------------------- the table

def machine_key() -> str:
    return "%s-%s" % (socket.gethostname() or "host", platform.machine() or "cpu")


def table_path() -> str:
    """Where ``bench models`` caches this machine's per-model table ($EDGEPIPE_BENCH_TABLE overrides)."""
    if os.environ.get("EDGEPIPE_BENCH_TABLE"):
        return os.environ["EDGEPIPE_BENCH_TABLE"]
    return os.path.join(str(cache_dir().parent), "bench", "models-%s.json" % machine_key())


def load_table(path: str = "") -> Dict[str, Dict[str, float]]:
    """Model -> {"cpu_ms": .., "tpu_ms": ..} from a ``bench models`` JSON; {} when there is none."""
    path = path or table_path()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the model table %s: %s", path, exc)
        return {}
    out: Dict[str, Dict[str, float]] = {}
    for row in data.get("rows", []) if isinstance(data, dict) else []:
        if not isinstance(row, dict) or not isinstance(row.get("model"), str):
            continue
        entry: Dict[str, float] = {}
        cpu = row.get("cpu") or {}
        one = cpu.get("1") if isinstance(cpu, dict) else None
        if isinstance(one, dict) and isinstance(one.get("median_ms"), (int, float)):
            entry["cpu_ms"] = float(one["median_ms"])
        if isinstance(row.get("tpu_ms"), (int, float)):
            entry["tpu_ms"] = float(row["tpu_ms"])
        out[row["model"]] = entry
    return out


def save_table(report: Dict[str, Any], path: str = "") -> str:
    path = path or table_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- is there an Edge TPU?

def _probe_models(cfg: Config, roles: Sequence[str]) -> Dict[str, str]:
    """Role -> why its Edge TPU model does not run here ("" when it does): each role's own model file
    probed with the TPU group's interpreter, all before any engine opens the device."""
    python = tpu_python(cfg)
    out: Dict[str, str] = {}
    for role in roles:
        spec = _spec(model_for(cfg, role, "edgetpu"), role)
        if "edgetpu" not in spec.files:
            continue
        path = find_local(spec, spec.files["edgetpu"], cfg.models.paths)  # not here yet: the delegate alone
        out[role] = edgetpu_present(python, [str(path)] if path is not None else [])[1]
    return out


# ---------------------------------------------------------------- prediction

@dataclass
class Timings:
    """Invoke times in ms per model and engine, and where they came from."""

    table: Dict[str, Dict[str, float]]
    fake_latency: Dict[str, float]
    switch_ms_per_mb: float

    def ms(self, spec: ModelSpec, engine: str) -> Optional[float]:
        row = self.table.get(spec.name, {})
        if engine == "cpu":
            v = row.get("cpu_ms") or spec.cpu_ms
        elif engine == "fake":
            v = self.fake_latency.get(spec.name, spec.tpu_ms)
        else:
            v = row.get("tpu_ms") or spec.tpu_ms
        return float(v) if v else None


def device_ms_per_frame(choice: Dict[str, Tuple[str, ModelSpec]], timings: Timings, faces: int,
                        cocompiled: Sequence[Sequence[str]] = (), switches: float = 0.0) -> Optional[float]:
    """Accelerator time one frame needs (None when a model's time is unknown).

    The detector (or classifier) runs once and FER ``faces`` times. A device
    that alternates between two models whose parameters do not fit its cache
    together (and were not co-compiled) reloads parameters: ``switches`` per
    frame, each of the average size of the two. With ``switches=0`` this is
    the least time possible (a bound: invokes of one model can queue up
    behind each other and share one reload).
    """
    total = 0.0
    on_dev: List[ModelSpec] = []
    for role, (engine, spec) in choice.items():
        if engine == "cpu":
            continue
        ms = timings.ms(spec, engine)
        if ms is None:
            return None
        total += ms * (faces if role == "fer" else 1)
        on_dev.append(spec)
    if len(on_dev) == 2:
        a, b = on_dev
        together = any(a.name in g and b.name in g for g in cocompiled)
        if not together and a.tpu_param_mb + b.tpu_param_mb > CACHE_MB:
            total += switches * (a.tpu_param_mb + b.tpu_param_mb) / 2.0 * timings.switch_ms_per_mb
    return total


def predict_fps(choice: Dict[str, Tuple[str, ModelSpec]], timings: Timings, faces: int, fer_workers: int,
                cores: int, n_devices: int, cocompiled: Sequence[Sequence[str]] = ()) -> float:
    """Frames per second the slowest resource allows: the accelerators or the CPU.

    Accelerator work (``device_ms_per_frame``, with one model switch per
    frame where the models do not fit the cache together, as measured on the
    fake device) is shared by ``n_devices``. On the CPU one core is left to
    the pipeline itself (capture, encoding, the bus): the detector runs one
    frame at a time, FER on ``min(workers, cores - 1)`` cores at once.
    """
    dev_ms = device_ms_per_frame(choice, timings, faces, cocompiled, switches=1.0)
    cores = max(1, cores - 1)
    if dev_ms is None:
        return 0.0
    cpu_total = cpu_serial = fer_cpu = 0.0
    for role, (engine, spec) in choice.items():
        if engine != "cpu":
            continue
        ms = timings.ms(spec, engine)
        if ms is None:
            return 0.0
        n = faces if role == "fer" else 1
        cpu_total += ms * n
        if role == "fer":
            fer_cpu = ms * n / max(1, min(fer_workers, cores))
        else:
            cpu_serial = max(cpu_serial, ms)
    bottleneck = max(dev_ms / max(1, n_devices), cpu_total / max(1, cores), cpu_serial, fer_cpu)
    return 1000.0 / bottleneck if bottleneck > 0 else 0.0


def device_bound(cfg: Config, placement: Dict[str, Dict[str, Any]], faces: int) -> Optional[float]:
    """The most frames per second the accelerators of a run's ``placement`` (its summary's) allow."""
    choice = {r: (p["engine"], manifest.get(p["model"])) for r, p in placement.items()}
    devices = {d for p in placement.values() for d in p.get("devices", [])}
    if not devices:
        return None
    timings = Timings({}, dict(cfg.engine.fake.latency_ms), cfg.engine.fake.switch_ms_per_mb)
    ms = device_ms_per_frame(choice, timings, faces, cfg.engine.fake.cocompiled)
    return 1000.0 * len(devices) / ms if ms else None


# ---------------------------------------------------------------- placing the roles

def roles_of(cfg: Config) -> List[str]:
    names = cfg.profile().models(cfg.pipeline.engine)
    if names.classifier:
        return ["classifier"]
    return ["detector"] + (["fer"] if names.fer else [])


def model_for(cfg: Config, role: str, engine: str) -> str:
    """The profile's model of ``role`` on ``engine``, or its ``fallback`` where its file is not here."""
    return _pick(cfg, role, engine)[0]


def _pick(cfg: Config, role: str, engine: str) -> Tuple[str, str]:
    """(model, why it is the profile's fallback or "")."""
    prof = cfg.profile()
    name = getattr(prof.models(engine), role) or getattr(prof.models(cfg.pipeline.engine), role)
    why, seen = "", {name}
    while engine != "fake" and name in prof.fallback:
        spec = _spec(name, role)
        filename = spec.files.get(engine) or spec.files.get("cpu", "")
        if filename and file_available(spec, filename, cfg.models.paths):
            break
        name = prof.fallback[name]
        why = "%s%s not found and not downloadable: %s instead" % (why + "; " if why else "", filename, name)
        if name in seen:
            raise ConfigError("profiles.%s.fallback: a loop through %s" % (cfg.pipeline.profile, name))
        seen.add(name)
    return name, why


def _devices(cfg: Config, engine: str, group_tpu: str = "") -> List[str]:
    return cfg.engine.settings(engine).for_group(group_tpu).device_names()


def place(cfg: Config, table: Optional[Dict[str, Dict[str, float]]] = None, group_tpu: str = "",
          tpu_check=edgetpu_present, warn=True, fetch=False) -> Dict[str, RolePlacement]:
    """Role -> placement for the profile's roles. Raises ConfigError for an unknown model, and
    MissingModelFiles (a ConfigError) where ``auto`` finds no model for a real source or, with ``fetch``,
    where a file the run needs is neither here nor downloadable now."""
    out = _place(cfg, table, group_tpu, tpu_check, warn)
    refuse = [r for r, p in out.items() if p.engine == "cpu" and p.reason.startswith(NO_MODEL)]
    if fetch or refuse:
        header = ("auto runs the fake engine only on the synthetic source, not on %s: "
                  % cfg.pipeline.source) if refuse else ""
        require_files({r: _spec(p.model, r) for r, p in out.items()}, {r: p.engine for r, p in out.items()},
                      cfg.models.paths, fetch=fetch, header=header)
    return out


NO_MODEL = "auto: no model here"


def _place(cfg: Config, table: Optional[Dict[str, Dict[str, float]]], group_tpu: str, tpu_check,
           warn: bool) -> Dict[str, RolePlacement]:
    roles = roles_of(cfg)
    out: Dict[str, RolePlacement] = {}
    auto_roles: List[str] = []
    accel = cfg.engine.auto.accelerator
    accel_ok, accel_why = (True, "") if accel == "fake" else (None, "")
    for role in roles:
        want = getattr(cfg.placement, role, "") or cfg.pipeline.engine
        if want == "auto":
            auto_roles.append(role)
            continue
        name, fell_back = _pick(cfg, role, want)
        spec = _spec(name, role)
        reason = fell_back or ("placement" if getattr(cfg.placement, role, "") else "pipeline.engine")
        if want == "edgetpu" and "edgetpu" not in spec.files:
            cpu_name, fell_back = _pick(cfg, role, "cpu")
            if warn:
                log.warning("model %s has no Edge TPU file: %s runs %s on the CPU", name, role, cpu_name)
            out[role] = RolePlacement(role, "cpu", cpu_name, [], "; ".join(
                x for x in ("no Edge TPU file for %s" % name, fell_back) if x))
            continue
        out[role] = RolePlacement(role, want, name, _devices(cfg, want, group_tpu), reason)
    if not auto_roles:
        return out
    probed: Dict[str, str] = {}
    if accel_ok is None and tpu_check is edgetpu_present:  # the real check: each role's own model, run once
        accel_why = edgetpu_attached()
        accel_ok = not accel_why
        if accel_ok:
            probed = _probe_models(cfg, auto_roles)
    elif accel_ok is None:
        accel_ok, accel_why = tpu_check()
    # candidates per auto role: (engine, model)
    cands: Dict[str, List[Tuple[str, ModelSpec]]] = {}
    notes: Dict[str, str] = {}
    for role in auto_roles:
        options: List[Tuple[str, ModelSpec]] = []
        acc_spec = _spec(model_for(cfg, role, accel), role)
        cpu_name, fell_back = _pick(cfg, role, "cpu")
        cpu_spec = _spec(cpu_name, role)
        acc_runs = accel_ok and (accel == "fake" or "edgetpu" in acc_spec.files) and not probed.get(role)
        if acc_runs:
            options.append((accel, acc_spec))
        if "cpu" in cpu_spec.files and not (acc_runs and cpu_spec.name != acc_spec.name):
            options.append(("cpu", cpu_spec))
        role_why = accel_why or probed.get(role, "")
        if not acc_runs and not cpu_model_available(cpu_spec, cfg.models.paths):
            why = "%s; model %s (%s) is not present and has no download source" % (
                role_why or "no Edge TPU file for %s" % acc_spec.name, cpu_spec.name, cpu_spec.files.get("cpu"))
            # the fake engine reads the synthetic source's drawn faces (every camera's)
            if all(is_synthetic(c.source) for c in cfg.camera_list().values()):
                cands[role] = [("fake", _spec(model_for(cfg, role, "fake"), role))]
                notes[role] = "auto: %s: the fake engine" % why
            else:  # a real source: never faked; ``place`` refuses the run naming the missing files
                cands[role] = [("cpu", cpu_spec)]
                notes[role] = "%s (%s)" % (NO_MODEL, why)
            continue
        if not options:
            options.append(("cpu", cpu_spec))
        if not accel_ok or probed.get(role):
            notes[role] = "auto: %s" % role_why
        elif accel == "edgetpu" and "edgetpu" not in acc_spec.files:
            notes[role] = "auto: %s has no Edge TPU file" % acc_spec.name
        if fell_back:
            notes[role] = "; ".join(x for x in (notes.get(role, ""), fell_back) if x)
        cands[role] = options
    timings = Timings(table if table is not None else load_table(cfg.engine.auto.table),
                      dict(cfg.engine.fake.latency_ms), cfg.engine.fake.switch_ms_per_mb)
    fixed = {r: (p.engine, _spec(p.model, r)) for r, p in out.items()}
    n_dev = max(1, len(_devices(cfg, accel, group_tpu)))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    best: Optional[Tuple[float, Dict[str, Tuple[str, ModelSpec]]]] = None
    for combo in product(*(cands[r] for r in auto_roles)):
        choice = dict(fixed)
        choice.update(zip(auto_roles, combo))
        fps = predict_fps(choice, timings, cfg.engine.auto.faces, cfg.fer.workers, cores, n_dev,
                          cfg.engine.fake.cocompiled)
        if best is None or fps > best[0] * 1.0001:
            best = (fps, choice)
    assert best is not None
    fps, choice = best
    src = "measured table" if timings.table else "manifest defaults"
    for role in auto_roles:
        engine, spec = choice[role]
        note = notes.get(role) or "auto: %.0f FPS predicted at %d faces (%s)" % (fps, cfg.engine.auto.faces, src)
        out[role] = RolePlacement(role, engine, spec.name, _devices(cfg, engine, group_tpu), note, auto=True)
    return out


def cpu_model_available(spec: ModelSpec, model_paths: Sequence[str] = ()) -> bool:
    """Whether the CPU model file is present (search folders, cache) or has a source to fetch it from."""
    name = spec.files.get("cpu")
    return bool(name) and file_available(spec, name, model_paths)


def _spec(name: str, role: str) -> ModelSpec:
    try:
        return manifest.get(name)
    except EngineError as exc:
        raise ConfigError("%s: %s" % (role, exc)) from None
