"""``python run.py install-service``: a systemd unit that starts the pipeline at boot and restarts it on failure.

    sudo .venv/bin/python run.py install-service --user "$USER" -- --config examples/dual-python.toml \\
        --profile fd+fer64 --engine auto --source picamera2:640x480 --display web:8080
    sudo systemctl daemon-reload && sudo systemctl enable --now edgepipe

Everything after ``--`` is passed to ``run.py`` as run options. The unit runs
``run.py`` with the Python that ran this command (the venv's), in this
repository, as ``--user``, with the groups that own the camera and the Edge
TPU (video, plugdev, apex: those that exist here). ``Restart=on-failure`` with
no start limit: a pipeline that stops with an error (a camera gone, a TPU
unplugged) is started again every ``RestartSec`` seconds; a clean stop is not.
"""
from __future__ import annotations

import argparse
import grp
import os
import pwd
import shlex
import subprocess
import sys
from typing import List, Optional

from edgepipe import ROOT
from edgepipe.bus.rundir import SERVICE_BASE

DEVICE_GROUPS = ("video", "plugdev", "apex")  # camera + /dev/dma_heap; Coral USB (udev rule); Coral PCIe


def existing_groups(names: List[str]) -> List[str]:
    out = []
    for g in names:
        try:
            grp.getgrnam(g)
        except KeyError:
            continue
        out.append(g)
    return out


def unit_text(user: str, python: str, workdir: str, run_args: List[str], restart_s: int = 5,
              groups: Optional[List[str]] = None, description: str = "edgepipe real-time edge-vision pipeline") -> str:
    cmd = " ".join(shlex.quote(a) for a in [python, os.path.join(workdir, "run.py")] + list(run_args))
    lines = [
        "[Unit]",
        "Description=%s" % description,
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        "User=%s" % user,
    ]
    if groups:
        lines.append("SupplementaryGroups=%s" % " ".join(groups))
    lines += [
        "WorkingDirectory=%s" % workdir,
        "Environment=PYTHONUNBUFFERED=1",
        # the run folder of its ipc:// endpoints: systemd sets no XDG_RUNTIME_DIR for a system service;
        # /run/edgepipe is made for it (owned by User, mode 0700) and removed when it stops, and
        # `run.py metrics` looks there too
        "RuntimeDirectory=%s" % os.path.basename(SERVICE_BASE),
        "RuntimeDirectoryMode=0700",
        "Environment=EDGEPIPE_RUN_DIR=%s" % SERVICE_BASE,
        "ExecStart=%s" % cmd,
        "Restart=on-failure",
        "RestartSec=%d" % restart_s,
        "TimeoutStopSec=30",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    run_args: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, run_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="run.py install-service", description=__doc__.splitlines()[0],
                                 epilog="run options for run.py go after --")
    ap.add_argument("--user", default=os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name,
                    help="the user the pipeline runs as (default: the user who ran sudo)")
    ap.add_argument("--name", default="edgepipe", help="the unit's name (default edgepipe)")
    ap.add_argument("--output", help="where to write the unit (default /etc/systemd/system/NAME.service)")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs run.py (default: this one)")
    ap.add_argument("--restart-sec", type=int, default=5, help="seconds between a failure and the restart")
    ap.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    ap.add_argument("--enable", action="store_true", help="then run systemctl daemon-reload and enable --now")
    args = ap.parse_args(argv)
    try:
        pwd.getpwnam(args.user)
    except KeyError:
        print("install-service: no user %r on this machine" % args.user, file=sys.stderr)
        return 2
    text = unit_text(args.user, os.path.abspath(args.python), ROOT, run_args, args.restart_sec,
                     existing_groups(list(DEVICE_GROUPS)))
    if args.print:
        sys.stdout.write(text)
        return 0
    out = args.output or "/etc/systemd/system/%s.service" % args.name
    try:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print("install-service: cannot write %s (%s); run it with sudo, or pass --output PATH"
              % (out, exc.strerror), file=sys.stderr)
        return 1
    print("wrote %s" % out)
    enable = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "%s.service" % args.name]]
    if args.enable:
        for cmd in enable:
            subprocess.run(cmd, check=True)
        print("%s enabled and started; logs: journalctl -u %s -f" % (args.name, args.name))
    else:
        print("next: sudo systemctl daemon-reload && sudo systemctl enable --now %s   "
              "(logs: journalctl -u %s -f)" % (args.name, args.name))
    return 0
