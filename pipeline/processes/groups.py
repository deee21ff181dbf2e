"""Process groups: which actors run in which process, and the endpoints between them.

``[groups.NAME]`` in the config moves actors out of the main process into a
child process run by the group's Python (for instance the Python 3.9 venv that
has PyCoral). Capture, the recorder and the metrics hub stay in the main
process. A group may take the whole FER pool (``fer``) or single workers
(``fer-0``, ``fer-1``, ...); ``fer.processes = true`` gives every FER worker a
group of its own, named after it (``[groups.fer-K] actors = ["fer-K"]``), so
that CPU workers run on separate cores. An ``inproc://`` endpoint used by actors of more than one process
becomes ``ipc://RUN_DIR/NAME``; a ``tcp://`` endpoint places a group on
another host.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Dict, List, Set, Tuple

import msgspec

from edgepipe.actors import roles
from edgepipe.pipeline.config.sections import Config, ConfigError, GroupConfig, endpoint_names

MAIN = "main"
# actor roles a group may take (``fer`` is the whole FER pool): the table of roles' movable ones
MOVABLE = roles.MOVABLE
MAIN_ONLY = tuple(r.name for r in roles.ROLES if not r.movable)

# endpoint -> the roles that use it (the first one binds), from the table of roles; ``control`` links the
# main process with every group ("*": every process)
LINKS: Dict[str, Tuple[str, ...]] = {ep: roles.users(ep) for ep in endpoint_names() if roles.users(ep)}
LINKS["control"] = (MAIN, "*")


def fer_workers(cfg: Config) -> List[str]:
    """The FER pool's worker names: fer-0 .. fer-N-1."""
    return ["fer-%d" % i for i in range(cfg.fer.workers)]


def fer_process_groups(cfg: Config) -> Dict[str, GroupConfig]:
    """The groups ``fer.processes = true`` implies: one per FER worker, named after it (none when the profile
    has no FER model, as ``cls``)."""
    if not cfg.fer.processes:
        return {}
    if cfg.pipeline.profile in cfg.profiles and not cfg.profile().models(requested_engine(cfg, "fer")).fer:
        return {}
    return {w: GroupConfig(actors=[w]) for w in fer_workers(cfg)}


def with_fer_processes(cfg: Config) -> Config:
    """``cfg`` with the groups ``fer.processes = true`` implies added to ``groups`` (the processes to start)."""
    extra = {n: g for n, g in fer_process_groups(cfg).items() if n not in cfg.groups}
    if not extra:
        return cfg
    groups = dict(cfg.groups)
    groups.update(extra)
    return msgspec.structs.replace(cfg, groups=groups)


def _check_fer_processes(cfg: Config) -> None:
    engine = requested_engine(cfg, "fer")
    if engine != "cpu":
        raise ConfigError("fer.processes = true runs each FER worker in its own process so that CPU workers use "
                          "separate cores, but FER's engine is %r (an accelerator belongs to one process); set "
                          "placement.fer = \"cpu\" (--place fer=cpu) or pipeline.engine = \"cpu\" (--engine cpu), "
                          "or put FER workers on accelerators with [groups.NAME] tpu = ..." % engine)
    for name, g in fer_process_groups(cfg).items():
        have = cfg.groups.get(name)
        if have is not None and list(have.actors) != g.actors:
            raise ConfigError("groups.%s: fer.processes = true names the process of FER worker %s %r; rename "
                              "this group" % (name, name, name))


def assignment(cfg: Config) -> Dict[str, str]:
    """Actor -> group name for every movable role a group claims, and for every FER worker (``fer-K``, in its
    pool's process unless a group or ``fer.processes`` takes it alone); the rest is ``main``."""
    workers = fer_workers(cfg)
    groups = dict(cfg.groups)
    implied = fer_process_groups(cfg)
    if implied:
        _check_fer_processes(cfg)
        for name, g in implied.items():
            groups.setdefault(name, g)
    out: Dict[str, str] = {}
    for name, g in groups.items():
        if name == MAIN:
            raise ConfigError("groups.main: 'main' is the name of the main process; choose another name")
        for i, role in enumerate(g.actors):
            path = "groups.%s.actors[%d]" % (name, i)
            if role in MAIN_ONLY:
                raise ConfigError("%s: %r runs in the main process and cannot move to a group" % (path, role))
            if role not in MOVABLE and role not in workers:
                raise ConfigError("%s: unknown actor %r (movable: %s, or one FER worker %s)"
                                  % (path, role, ", ".join(MOVABLE), "..".join(sorted({workers[0], workers[-1]}))))
            if role in out:
                raise ConfigError("%s: %r is already in group %r" % (path, role, out[role]))
            out[role] = name
    alone = [w for w in workers if w in out]
    if alone and "fer" in out:
        raise ConfigError("groups.%s.actors: 'fer' (the whole FER pool) and worker %s (in group %r) cannot both "
                          "move%s" % (out["fer"], alone[0], out[alone[0]],
                                      "; fer.processes = true runs each worker alone" if cfg.fer.processes else ""))
    for w in workers:
        out.setdefault(w, out.get("fer", MAIN))
    cameras = tuple(cfg.camera_list())
    for role in (r for r in roles.ROLES if r.per_camera and r.name in out):  # a group's "encoder": every camera's
        for cam in cameras:
            out.setdefault(roles.camera_actor(role.name, cam, cameras), out[role.name])
    return out


def group_of(role: str, assign: Dict[str, str]) -> str:
    return assign.get(role, MAIN)


def processes_of(role: str, assign: Dict[str, str], cfg: Config) -> Set[str]:
    """The processes running actors of ``role`` (the FER pool may be spread over several)."""
    if role == "fer":
        return {group_of(w, assign) for w in fer_workers(cfg)}
    return {group_of(role, assign)}


def requested_engine(cfg: Config, role: str) -> str:
    """The engine a role asks for: its placement, else pipeline.engine (auto not resolved)."""
    return getattr(cfg.placement, role, "") or cfg.pipeline.engine


def device_claim(cfg: Config, role: str, group: str) -> str:
    """The accelerator devices a role of process ``group`` would open ("" for the CPU)."""
    engine = requested_engine(cfg, role)
    if engine == "auto":
        engine = cfg.engine.auto.accelerator
    g = cfg.groups.get(group)
    if engine == "edgetpu":
        return "Edge TPU %r" % ((g.tpu if g is not None and g.tpu else ",".join(cfg.engine.edgetpu.devices))
                                or "default")
    if engine == "fake":
        return "fake device %r" % ",".join("fake:%d" % i for i in range(cfg.engine.fake.devices))
    return ""


def check_tpus(cfg: Config, assign: Dict[str, str]) -> None:
    """One accelerator belongs to one process: refuse two processes that claim the same device."""
    if cfg.pipeline.profile not in cfg.profiles:
        return
    models = cfg.profile().models(cfg.pipeline.engine)
    used = ["classifier"] if models.classifier else ["detector"] + (["fer"] if models.fer else [])
    claims: Dict[str, str] = {}
    for role, proc in [(r, x) for r in used for x in sorted(processes_of(r, assign, cfg))]:
        device = device_claim(cfg, role, proc)
        if not device:
            continue
        if device in claims and claims[device] != proc:
            raise ConfigError("groups: %s and %s both claim %s (one accelerator belongs to one process); set "
                              "groups.NAME.tpu to different devices (usb:0, usb:1, pci:0) or put their actors "
                              "in one group" % (claims[device], proc, device))
        claims[device] = proc


def processes_using(link: str, assign: Dict[str, str], cfg: Config) -> Set[str]:
    users = LINKS[link]
    if "*" in users:
        return {MAIN} | set(assign.values())
    return {x for r in users if r != MAIN for x in processes_of(r, assign, cfg)}


def check_by_hand(cfg: Config, assign: Dict[str, str]) -> None:
    """A group started by hand (``spawn = false``) cannot reach an ``inproc://`` endpoint of another process:
    every link it shares with another process needs an ipc:// (same host) or tcp:// address."""
    for name, g in cfg.groups.items():
        if g.spawn:
            continue
        bad = ["endpoints.%s" % link for link in LINKS
               if name in processes_using(link, assign, cfg) and len(processes_using(link, assign, cfg)) > 1
               and getattr(cfg.endpoints, link).startswith("inproc://")]
        if bad:
            raise ConfigError("groups.%s.spawn = false: %s %s inproc://, which a group started by hand cannot "
                              "reach; give %s an ipc:// (same host) or tcp://HOST:PORT address in the config both "
                              "processes load" % (name, ", ".join(bad), "is" if len(bad) == 1 else "are",
                                                  "it" if len(bad) == 1 else "them"))


def plan(cfg: Config, run_dir: str) -> Config:
    """A copy of ``cfg`` whose cross-process ``inproc://`` endpoints are ``ipc://`` under ``run_dir``."""
    assign = assignment(cfg)
    check_tpus(cfg, assign)
    check_by_hand(cfg, assign)
    out = msgspec.structs.replace(cfg, endpoints=msgspec.structs.replace(cfg.endpoints))
    for link in LINKS:
        ep = getattr(out.endpoints, link)
        if ep.startswith("inproc://") and len(processes_using(link, assign, cfg)) > 1:
            setattr(out.endpoints, link, "ipc://%s/%s" % (run_dir, link))
    return out


def needs_curve(endpoint: str) -> bool:
    """A tcp:// endpoint that is not loopback needs CURVE keys."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host in ("localhost",):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name or an interface ("*", "eth0"): reachable from elsewhere


def check_security(cfg: Config) -> None:
    """Refuse a non-loopback tcp:// endpoint without CURVE keys."""
    open_eps = [(name, getattr(cfg.endpoints, name)) for name in endpoint_names()
                if needs_curve(getattr(cfg.endpoints, name))]
    if open_eps and not cfg.security.keys_dir:
        names = ", ".join("endpoints.%s = %s" % kv for kv in open_eps)
        raise ConfigError("%s: a tcp:// endpoint reachable from other hosts needs CURVE encryption; create keys "
                          "with `python run.py keys DIR` and set security.keys_dir = DIR on both hosts "
                          "(loopback and ipc:// need none)" % names)
    if cfg.security.keys_dir and not os.path.isdir(cfg.security.keys_dir):
        raise ConfigError("security.keys_dir: %s does not exist (create it with `python run.py keys %s`)"
                          % (cfg.security.keys_dir, cfg.security.keys_dir))
