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

from pipeline import service, tpu_venv

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


def test_service_unit_starts_at_boot_and_restarts_on_failure(tmp_path):
    out = tmp_path / "edgepipe.service"
    user = service.pwd.getpwuid(os.getuid()).pw_name
    rc = service.main(["--user", user, "--output", str(out), "--", "--profile", "fd+fer64", "--source",
                       "picamera2:640x480"])
    assert rc == 0
    text = out.read_text()
    lines = set(text.splitlines())
    assert {"Restart=on-failure", "RestartSec=5", "StartLimitIntervalSec=0", "WantedBy=multi-user.target",
            "User=%s" % user, "WorkingDirectory=%s" % ROOT} <= lines
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
