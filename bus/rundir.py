"""The run directory: where a pipeline's ``ipc://`` endpoints live, private to the user.

The public endpoints (``results``, ``metrics``) are by default ``ipc://{pipeline}/results`` and
``ipc://{pipeline}/metrics``: ``{pipeline}`` is ``BASE/NAME`` with NAME the pipeline's name
(``pipeline.name``, ``--name``, default ``default``), so that a client knows them before the pipeline
starts (``python run.py endpoints``) and can connect first. ``PipelineDir.claim`` takes the name for
one run: a second pipeline of that name on the host is refused (a lock file the kernel releases when
its holder dies, so a dead pipeline's folder and stale sockets are taken over).

An endpoint written ``ipc://{run}/NAME`` (every link between the processes of one host) is
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
import fcntl
import os
import shutil
import socket
import stat
import tempfile
from typing import List, Optional, Tuple

RUN = "{run}"
PIPELINE = "{pipeline}"  # BASE/NAME: the folder of the pipeline named NAME (its public endpoints)
DEFAULT_NAME = "default"
LOCK = "lock"  # in BASE/NAME: held (flock) by the pipeline of that name, and its pid
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
        self.pipeline: Optional["PipelineDir"] = None  # the name's folder of this run, released with it

    @classmethod
    def create(cls, base: Optional[str] = None) -> "RunDir":
        parent = _private_base(base or base_dir())
        try:
            return cls(tempfile.mkdtemp(prefix="%d-" % os.getpid(), dir=parent))  # mode 0700
        except FileNotFoundError:  # another run's ``remove`` took the empty base away just now: once more
            return cls(tempfile.mkdtemp(prefix="%d-" % os.getpid(), dir=_private_base(parent)))

    def expand(self, endpoint: str) -> str:
        endpoint = endpoint.replace(RUN, self.path)
        return self.pipeline.expand(endpoint) if self.pipeline is not None else endpoint

    def remove(self) -> None:
        """Delete the run's folder (its socket files with it), and the base folder when no other run uses it;
        release the pipeline's name (``PipelineDir.release``)."""
        if self.pipeline is not None:
            self.pipeline.release()
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


class PipelineDir:
    """The folder ``BASE/NAME`` of the pipeline named NAME, claimed for one run (``claim``): ``expand`` puts
    it into endpoints (``{pipeline}``); ``release`` removes it with its sockets and lets the name go."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def claim(cls, name: str, base: Optional[str] = None) -> "PipelineDir":
        """Take the name (``RunDirError`` naming what to pass when a living pipeline has it)."""
        path = os.path.join(_private_base(base or base_dir()), name)
        for _ in range(5):  # a release of the same name at the same moment removed what was opened: again
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
                fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RunDirError("cannot make the pipeline folder %s: %s" % (path, exc)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunDirError("a pipeline named %r already runs on this host (pid %s, in %s); give this one "
                                  "another name: --name NAME, or pipeline.name in a --config file"
                                  % (name, _pid_in(os.path.join(path, LOCK)) or "?", path)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(os.path.join(path, LOCK)).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the lock file was removed by the release of the one that held it: take the new one
                os.close(fd)
                continue
            os.chmod(path, 0o700)
            os.ftruncate(fd, 0)
            os.write(fd, b"%d\n" % os.getpid())
            return cls(path, fd)
        raise RunDirError("cannot claim the pipeline folder %s: it keeps changing" % path)

    def expand(self, endpoint: str) -> str:
        return endpoint.replace(PIPELINE, self.path)

    def release(self) -> None:
        """Remove the folder (the lock and the sockets in it), then let the name go. Safe twice."""
        if self._fd < 0:
            return
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self._fd)
            self._fd = -1


def _pid_in(lock: str) -> int:
    try:
        with open(lock, encoding="ascii") as fh:
            text = fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return 0
    return int(text) if text.isdigit() else 0


def pipeline_dir(name: str, bases: Optional[List[str]] = None) -> Tuple[str, bool]:
    """Where the pipeline named ``name`` has its folder, and whether it runs: the first base (of ``bases``,
    default ``candidate_bases()``, this user's) where a living process holds the name, else the folder in
    ``base_dir()`` where a pipeline started here would make it."""
    for b in (bases if bases is not None else candidate_bases()):
        path = os.path.join(b, name)
        pid = _pid_in(os.path.join(path, LOCK))
        if pid and _mine(path) and _alive(pid):
            return path, True
    return os.path.join(base_dir(), name), False


def running_names(bases: Optional[List[str]] = None) -> List[str]:
    """The names of the pipelines of this user that run now (in any base), sorted."""
    out = set()
    for b in (bases if bases is not None else candidate_bases()):
        try:
            names = os.listdir(b)
        except OSError:
            continue
        for n in names:
            pid = _pid_in(os.path.join(b, n, LOCK))
            if pid and _alive(pid):
                out.add(n)
    return sorted(out)


def find_pipeline(endpoint: str, name: str, bases: Optional[List[str]] = None) -> str:
    """An endpoint for a client: ``{pipeline}`` becomes the folder of the running pipeline named ``name``.

    Raises RunDirError naming what to pass when none of that name runs."""
    if PIPELINE not in endpoint:
        return endpoint
    path, running = pipeline_dir(name, bases)
    if running:
        return endpoint.replace(PIPELINE, path)
    others = running_names(bases)
    raise RunDirError("no pipeline named %r runs (looked in %s)%s" % (
        name, " and ".join(bases if bases is not None else candidate_bases()),
        "; running: %s (pass --name)" % ", ".join(others) if others else "; start one: python run.py --name %s"
        % name))
