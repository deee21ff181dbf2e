"""Process groups: which actors run in which process, and the endpoints between them.

``[groups.NAME]`` in the config moves actors out of the main process into a
child process run by the group's Python (for instance the Python 3.9 venv that
has PyCoral). The recorder and the metrics hub stay in the main process. A
group may take cameras (``cameras = ["a"]``: camera a's capture and encoder,
e.g. on the host the camera is attached to; ``[cameras.a] encoded`` says
where its encoder binds). A group may take the whole FER pool (``fer``) or single workers
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
from edgepipe.bus.sockets import BusError, camera_endpoint, check_endpoint
from edgepipe.pipeline.config.sections import Config, ConfigError, GroupConfig, endpoint_names

MAIN = "main"
# actor roles a group may take (``fer`` is the whole FER pool): the table of roles' movable ones
MOVABLE = roles.MOVABLE
MAIN_ONLY = tuple(r.name for r in roles.ROLES if not r.movable)

# endpoint -> the roles that use it (the first one binds), from the table of roles; ``control`` links the
# main process with every group ("*": every process)
LINKS: Dict[str, Tuple[str, ...]] = {ep: roles.users(ep) for ep in endpoint_names() if roles.users(ep)}
LINKS["control"] = (MAIN, "*")
# the links each camera has of its own (bound by its capture and encoder): frames, encoded
CAMERA_LINKS = tuple(ep for r in roles.ROLES if r.per_camera for ep in r.binds)


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
                raise ConfigError("%s: %r runs in the main process and cannot move to a group%s" % (
                    path, role, "; a group runs a camera's capture and encoder with cameras = [\"NAME\"]"
                    if role == "capture" else ""))
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
    _assign_cameras(cfg, groups, out, cameras)
    for role in (r for r in roles.ROLES if r.per_camera and r.name in out):  # a group's "encoder": every camera's
        for cam in cameras:
            out.setdefault(roles.camera_actor(role.name, cam, cameras), out[role.name])
    return out


def _assign_cameras(cfg: Config, groups: Dict[str, GroupConfig], out: Dict[str, str],
                    cameras: Tuple[str, ...]) -> None:
    """A group's ``cameras``: each one's capture and encoder (``capture-NAME``, ``encoder-NAME``)."""
    taken: Dict[str, str] = {}
    for name, g in groups.items():
        for i, cam in enumerate(g.cameras):
            path = "groups.%s.cameras[%d]" % (name, i)
            if cam not in cfg.cameras:
                raise ConfigError("%s: %s" % (path, (
                    "the one camera 'default' (pipeline.source) stays in the main process; name the camera in "
                    "[cameras.NAME] source = ... and give its name here" if cam == "default" else
                    "unknown camera %r (cameras: %s)" % (cam, ", ".join(sorted(cfg.cameras)) or "none; add "
                                                         "[cameras.%s] source = ..." % cam))))
            if cam in taken:
                raise ConfigError("%s: camera %r is already in group %r" % (path, cam, taken[cam]))
            taken[cam] = name
            for role in (r for r in roles.ROLES if r.per_camera):
                out[roles.camera_actor(role.name, cam, cameras)] = name


def cameras_of(cfg: Config) -> Dict[str, List[str]]:
    """Group -> the cameras it runs (only groups that take cameras)."""
    return {name: list(g.cameras) for name, g in cfg.groups.items() if g.cameras}


def camera_link(cfg: Config, link: str, camera: str) -> str:
    """Where ``camera``'s own ``link`` (frames, encoded) is: ``[cameras.NAME]``'s address, else the one derived
    from ``endpoints.LINK`` (``bus.sockets.camera_endpoint``)."""
    cam = cfg.cameras.get(camera)
    given = getattr(cam, link, "") if cam is not None else ""
    return given or camera_endpoint(getattr(cfg.endpoints, link), camera, list(cfg.camera_list()))


def _camera_link_users(cfg: Config, link: str, camera: str, assign: Dict[str, str]) -> Set[str]:
    """The processes using ``camera``'s ``link``: its capture's or encoder's, and those of the roles that
    connect to it (the display only when one runs)."""
    cameras = tuple(cfg.camera_list())
    out: Set[str] = set()
    for r in roles.ROLES:
        if link not in r.endpoints or (r.name == "display" and cfg.pipeline.display == "none"):
            continue
        out |= {group_of(roles.camera_actor(r.name, camera, cameras), assign)} if r.per_camera else \
            processes_of(r.name, assign, cfg)
    return out


def group_of(role: str, assign: Dict[str, str]) -> str:
    return assign.get(role, MAIN)


def processes_of(role: str, assign: Dict[str, str], cfg: Config) -> Set[str]:
    """The processes running actors of ``role`` (the FER pool may be spread over several)."""
    if role == "fer":
        return {group_of(w, assign) for w in fer_workers(cfg)}
    if roles.BY_NAME[role].per_camera:  # one actor per camera; a group may run some of them
        cameras = tuple(cfg.camera_list())
        return {group_of(roles.camera_actor(role, cam, cameras), assign) for cam in cameras}
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
        bad = ["endpoints.%s" % link for link in LINKS if link not in CAMERA_LINKS
               and name in processes_using(link, assign, cfg) and len(processes_using(link, assign, cfg)) > 1
               and getattr(cfg.endpoints, link).startswith("inproc://")]
        bad += ["cameras.%s.%s" % (cam, link) for cam in cfg.cameras for link in CAMERA_LINKS
                if name in _camera_link_users(cfg, link, cam, assign)
                and len(_camera_link_users(cfg, link, cam, assign)) > 1
                and camera_link(cfg, link, cam).startswith("inproc://")]
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
    out = msgspec.structs.replace(cfg, endpoints=msgspec.structs.replace(cfg.endpoints),
                                  cameras={n: msgspec.structs.replace(c) for n, c in cfg.cameras.items()})
    for link in LINKS:
        ep = getattr(out.endpoints, link)
        if link in CAMERA_LINKS:  # each camera's own: it crosses processes when its actors and users do
            crossing = [cam for cam in cfg.camera_list() if len(_camera_link_users(cfg, link, cam, assign)) > 1
                        and camera_link(cfg, link, cam).startswith("inproc://")]
            for cam in (c for c in crossing if getattr(out.cameras.get(c), link, "")):
                setattr(out.cameras[cam], link, "ipc://%s/%s.%s" % (run_dir, link, cam))
            if ep.startswith("inproc://") and any(not getattr(out.cameras.get(c), link, "") for c in crossing):
                setattr(out.endpoints, link, "ipc://%s/%s" % (run_dir, link))
        elif ep.startswith("inproc://") and len(processes_using(link, assign, cfg)) > 1:
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
    """Refuse a camera's endpoint that is no endpoint, and a non-loopback tcp:// endpoint without CURVE keys
    (``[endpoints]`` and each camera's own)."""
    given = [("endpoints.%s" % name, getattr(cfg.endpoints, name)) for name in endpoint_names()]
    for cam, cc in sorted(cfg.cameras.items()):
        for link in CAMERA_LINKS:
            ep = getattr(cc, link)
            if ep:
                try:
                    check_endpoint(ep)
                except BusError as exc:
                    raise ConfigError("cameras.%s.%s: %s" % (cam, link, exc)) from None
                given.append(("cameras.%s.%s" % (cam, link), ep))
    open_eps = [(key, ep) for key, ep in given if needs_curve(ep)]
    if open_eps and not cfg.security.keys_dir:
        names = ", ".join("%s = %s" % kv for kv in open_eps)
        raise ConfigError("%s: a tcp:// endpoint reachable from other hosts needs CURVE encryption; create keys "
                          "with `python run.py keys DIR` and set security.keys_dir = DIR on both hosts "
                          "(loopback and ipc:// need none)" % names)
    if cfg.security.keys_dir and not os.path.isdir(cfg.security.keys_dir):
        raise ConfigError("security.keys_dir: %s does not exist (create it with `python run.py keys %s`)"
                          % (cfg.security.keys_dir, cfg.security.keys_dir))
