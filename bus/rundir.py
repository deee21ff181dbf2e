"""The run directory: where a pipeline's ``ipc://`` endpoints live, private to the user, one per run.

An endpoint written ``ipc://{run}/NAME`` (the default of the public ``results`` and ``metrics``
endpoints, and of every link between the processes of one host) is
``ipc://BASE/PID-XXXX/NAME`` for one run, where BASE is ``$EDGEPIPE_RUN_DIR``, else
``$XDG_RUNTIME_DIR/edgepipe``, else ``/tmp/edgepipe-UID``. BASE and the run's folder have mode
0700, so only the user's own processes can connect (ipc has no other authentication), two
pipelines on one host never collide, and the folder and its socket files are removed when the run
ends. ``live_runs`` finds the runs of living processes, so that ``run.py metrics`` and other
clients attach without being told a path. A client looks in every place a pipeline may use
(``candidate_bases``): the service installed by ``run.py install-service`` runs with
``EDGEPIPE_RUN_DIR=/run/edgepipe`` (systemd's ``RuntimeDirectory``; systemd sets no
``XDG_RUNTIME_DIR`` for a system service), while a login shell has ``XDG_RUNTIME_DIR``.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import tempfile
from typing import List, Optional

RUN = "{run}"
SERVICE_BASE = "/run/edgepipe"  # the run directory of the systemd service (RuntimeDirectory=edgepipe)


class RunDirError(RuntimeError):
    """The run directory cannot be made safely (a base folder that is not the user's, or open to others)."""

    user_facing = True


def base_dir() -> str:
    """Where the run folders are made (see the module's doc)."""
    if os.environ.get("EDGEPIPE_RUN_DIR"):
        return os.environ["EDGEPIPE_RUN_DIR"]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "edgepipe")
    return os.path.join(tempfile.gettempdir(), "edgepipe-%d" % os.getuid())


def candidate_bases() -> List[str]:
    """Every base a pipeline of this user may have made its run folder in: ``$EDGEPIPE_RUN_DIR`` alone when it
    is set (it says where the pipelines are), else the service's, the login session's and the temporary one
    (each once, in that order)."""
    if os.environ.get("EDGEPIPE_RUN_DIR"):
        return [os.environ["EDGEPIPE_RUN_DIR"]]
    out = [base_dir(), SERVICE_BASE]
    xdg = os.environ.get("XDG_RUNTIME_DIR") or "/run/user/%d" % os.getuid()
    out += [os.path.join(xdg, "edgepipe"), os.path.join(tempfile.gettempdir(), "edgepipe-%d" % os.getuid())]
    seen: List[str] = []
    for b in out:
        if b not in seen:
            seen.append(b)
    return seen


def _private_base(path: str) -> str:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise RunDirError("cannot make the run directory %s: %s (set EDGEPIPE_RUN_DIR to a folder of yours)"
                          % (path, exc)) from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RunDirError("%s is not a folder of this user's; refusing to put ipc endpoints there (remove it, "
                          "or set EDGEPIPE_RUN_DIR to a folder of yours)" % path)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


class RunDir:
    """One run's private folder; ``expand`` puts it into endpoints; ``remove`` deletes it and its sockets."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, base: Optional[str] = None) -> "RunDir":
        parent = _private_base(base or base_dir())
        try:
            return cls(tempfile.mkdtemp(prefix="%d-" % os.getpid(), dir=parent))  # mode 0700
        except FileNotFoundError:  # another run's ``remove`` took the empty base away just now: once more
            return cls(tempfile.mkdtemp(prefix="%d-" % os.getpid(), dir=_private_base(parent)))

    def expand(self, endpoint: str) -> str:
        return endpoint.replace(RUN, self.path)

    def remove(self) -> None:
        """Delete the run's folder (its socket files with it), and the base folder when no other run uses it."""
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.path))
        except OSError:  # not empty: other runs
            pass


def pid_of(run_path: str) -> int:
    """The pid of the process that made a run folder (its name is ``PID-XXXX``), or 0."""
    head = os.path.basename(run_path).split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_runs(base: Optional[str] = None) -> List[str]:
    """The run folders under ``base`` whose process is alive, newest first."""
    base = base or base_dir()
    try:
        names = os.listdir(base)
    except OSError:
        return []
    runs = [os.path.join(base, n) for n in names if pid_of(n) and _alive(pid_of(n))]
    return sorted(runs, key=lambda p: os.stat(p).st_mtime if os.path.exists(p) else 0.0, reverse=True)


def ipc_in_use(path: str) -> bool:
    """True when a process accepts connections on the Unix socket ``path`` (a stale file: False)."""
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    finally:
        s.close()


def _mine(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.getuid()
    except OSError:
        return False


def resolve(endpoint: str, base: Optional[str] = None, bases: Optional[List[str]] = None) -> str:
    """An endpoint for a client: ``ipc://{run}/NAME`` becomes NAME in the folder of the one running pipeline,
    looked for under ``base``, else in every base of ``bases`` (default: ``candidate_bases()``) that is this
    user's.

    Raises RunDirError naming what to pass when no pipeline, or more than one, runs.
    """
    if RUN not in endpoint:
        return endpoint
    where = [base] if base else [b for b in (bases if bases is not None else candidate_bases()) if _mine(b)]
    runs = [r for b in where for r in live_runs(b)]
    if len(runs) == 1:
        return endpoint.replace(RUN, runs[0])
    if not runs:
        raise RunDirError("no running pipeline under %s; start one, or pass the endpoint it prints at start "
                          "(--endpoint)" % (" or ".join(where) if where else " or ".join(candidate_bases())))
    raise RunDirError("%d pipelines run; pass one of their endpoints with --endpoint: %s"
                      % (len(runs), ", ".join(endpoint.replace(RUN, r) for r in runs)))
