"""The default command, ``python run.py [options]``: run the pipeline and print its summary; and
``python run.py group NAME``, one process group run alone.

``pipeline.cli`` parses the options and imports this module only then (it imports the whole pipeline).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from typing import Any, Dict, List, Optional, Set

from edgepipe.actors.monitoring.resource_monitor import resource_lines
from edgepipe.actors.sinks.sinks import DisplayError
from edgepipe.actors.sources.demo import notice as demo_notice
from edgepipe.actors.sources.source_factory import no_frame
from edgepipe.actors.sources.sources import SourceError
from edgepipe.bus.sockets import BusError
from edgepipe.models.engines.engine import EngineError
from edgepipe.pipeline.config.loading import ConfigError, load, to_dict
from edgepipe.pipeline.loop import event_loop_run, setup_logging
from edgepipe.pipeline.plan.placement import place
from edgepipe.pipeline.plan.source_auto import resolve_source
from edgepipe.pipeline.processes import group
from edgepipe.pipeline.runner import RunOptions, run

log = logging.getLogger("edgepipe")


def human_summary(s: Dict[str, Any]) -> str:
    lines = [
        "profile %s, engine %s, source %s%s" % (s["profile"], s["engine"], s["source"],
                                               " (interrupted)" if s["interrupted"] else ""),
        "placement: " + "; ".join("%s %s on %s" % (r, p["model"], ", ".join(p["devices"]) or p["engine"])
                                  for r, p in s.get("placement", {}).items()),
        "frames: %d captured, %d completed, %d partial, %d dropped, %d unaccounted"
        % (s["frames_captured"], s["frames_completed"], s["frames_partial"], s["dropped_total"], s["unaccounted"]),
        "speed: %.1f FPS over %.1f s; latency capture->result p50 %.1f ms, p99 %.1f ms"
        % (s["fps"], s["duration_s"], s["latency_ms"]["p50"], s["latency_ms"]["p99"]),
    ]
    said: Set[str] = set()  # drop reasons explained already
    if s["dropped_total"]:
        lines.append(drops_line(s, said))
    lines.extend(seen_lines(s, said))
    fail = s.get("failure")
    if fail:
        lines.append("FAILED: %s; lost: %s and %d frames in flight"
                     % (fail["error"], "actors " + ", ".join(fail["actors_lost"]) if fail["actors_lost"]
                        else "no actor", fail["frames_lost"]))
    errors = s["actors"].get("capture", {}).get("counters", {}).get("source_errors", 0)
    if errors:
        lines.append("source: %d unreadable inputs skipped or cut short (see the log)" % errors)
    d = s.get("display", {})
    if d.get("results") is not None:
        lines.append("display %s: %d of %d results written%s" % (
            d["sink"], d["written"], d["results"], "; dropped: " + reasons(d["dropped_by_reason"], said)
            if d["dropped"] else ""))
    for name, d in s.get("devices", {}).items():
        lines.append("device %s: %d invokes, busy %.1f%% of %.1f s, %d model switches"
                     % (name, d["invokes"], d["busy_pct"], d.get("active_s", 0.0), d["switches"]))
    lines.extend(resource_lines(s.get("resources", {})))
    if len(s.get("cameras", {})) > 1:
        for name, c in s["cameras"].items():
            lines.append("camera %s (%s): %d captured, %d completed, %d partial, %d dropped, %d unaccounted; "
                         "%.1f FPS, latency p50 %.1f ms, p99 %.1f ms; %d faces"
                         % (name, c["source"], c["frames_captured"], c["frames_completed"], c["frames_partial"],
                            c["frames_dropped"], c["unaccounted"], c["fps"], c["latency_ms"]["p50"],
                            c["latency_ms"]["p99"], c["faces"]))
    if "source_reconnects" in s:
        lines.append("source: %d reconnects" % s["source_reconnects"])
    sources = {c["source"] for c in s.get("cameras", {}).values()} or {s["source"]}
    synthetic = all(x == "synthetic" or x.startswith("synthetic:") for x in sources)  # every camera's
    fake = fake_banner(s.get("engines", {}), "synthetic" if synthetic else s["source"])
    if fake:
        lines.append(fake)
    mq = s["actors"].get("mqtt")
    if mq is not None:
        lines.append(mqtt_line(mq["counters"]))
    lines.append("actors (output fps / median busy ms per message): " + ", ".join(
        "%s %.1f/%.2f" % (n, a["fps"], a["busy_ms_p50"]) for n, a in s["actors"].items() if n != "resources"))
    return "\n".join(lines)


DROPS = {  # what each drop reason means, said once in the summary
    "transport": "lost between two actors: a queue was full",
    "stale": "a newer frame was waiting: with a live source the freshest wins",
    "bad_frame": "the engine refused the frame",
    "engine_error": "the model failed on it",
    "engine_timeout": "the model took too long",
    "encode_error": "could not be encoded",
    "encode_timeout": "encoding took too long",
    "skipped": "a newer result was waiting: the display shows the latest",
    "no_frame": "its frame was gone when the result came",
    "not_reached": "still on the way when the run stopped",
}


def reasons(by_reason: Dict[str, int], said: Optional[Set[str]] = None) -> str:
    """``n reason (what it means)`` per drop reason, the most first; a meaning once (``said``: told already)."""
    said = set() if said is None else said
    out = []
    for r, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append("%d %s%s" % (n, r, "" if r in said else " (%s)" % DROPS.get(r, "see the log")))
        said.add(r)
    return ", ".join(out)


def drops_line(s: Dict[str, Any], said: Set[str]) -> str:
    """Every dropped frame with the actor that dropped it and why."""
    by_actor = s.get("dropped_by_actor")
    if not by_actor:
        return "drops: " + reasons(s["dropped_by_reason"], said)
    return "drops: " + "; ".join("%s %s" % (a, reasons(d, said)) for a, d in by_actor.items())


def seen_lines(s: Dict[str, Any], said: Set[str]) -> List[str]:
    """What the run saw: faces (with the results the recorder missed, and why), expressions per label and
    the dominant one, the longest face tracks, the truth check, a classifier's top labels."""
    lines = []
    f = s["faces"]
    detects = "detector" in s.get("models", {"detector": ""})
    if detects:
        rec = s.get("recorder", {})
        missed = rec.get("dropped", 0)
        lines.append("faces: %d in %d frames%s" % (f["faces"], f["frames"], (
            " recorded; %d of %d results did not reach the recorder: %s"
            % (missed, rec["results"], reasons(rec["dropped_by_reason"], said))) if missed else ""))
    if s.get("expressions"):
        lines.append("expressions (faces per label): %s; dominant: %s" % (
            ", ".join("%s %d" % kv for kv in s["expressions"].items()), s["dominant_expression"]))
    tracks = s.get("tracks")
    if tracks:
        listed = "; ".join("#%d %d frames, mostly %s" % (t["track"], t["frames"], t["expression"] or "no expression")
                           for t in tracks[:5])
        more = s["tracks_total"] > len(tracks[:5])
        lines.append("face tracks: %d (%s%s%s)" % (s["tracks_total"], "the longest: " if more else "", listed,
                                                  "; ..." if more else ""))
    if detects and f.get("frames_with_truth"):
        lines.append("truth: %d/%d faces found, %d/%d expressions right, %d false positives, %d/%d frames exact"
                     % (f["matched"], f["truth"], f["expression_correct"], f["truth"], f["false_positives"],
                        f["frames_exact"], f["frames_with_truth"]))
    if s.get("labels"):
        lines.append("labels (top-1 of each frame): " + ", ".join(
            "%s %d frames (p %.2f)" % (x["label"], x["frames"], x["mean_prob"]) for x in s["labels"]))
    return lines


def mqtt_line(c: Dict[str, int]) -> str:
    """What the MQTT sink sent; what it could not send only when there was some."""
    parts = ["%d messages published" % c.get("published", 0)]
    if c.get("queue_dropped"):
        parts.append("%d dropped from its full queue (the oldest: the broker was away or slower than the results)"
                     % c["queue_dropped"])
    for key, what in (("reconnects", "reconnects"), ("connect_failures", "connect failures"),
                      ("publish_errors", "publish errors"), ("unsent_at_stop", "unsent at stop")):
        if c.get(key):
            parts.append("%d %s" % (c[key], what))
    return "mqtt: " + ", ".join(parts)


def fake_banner(engines: Dict[str, str], source: str = "") -> str:
    """One line when any role runs on the fake engine (nothing real ran there), else ""."""
    fake = sorted(r for r, e in engines.items() if e == "fake")
    if not fake:
        return ""
    reads = ("it reads the synthetic source's drawn faces" if source == "synthetic" or source.startswith("synthetic:")
             else "nothing in %s is recognised: it reads only the synthetic source's drawn faces"
             % (source or "a real source"))
    return ("FAKE ENGINE: %s on a simulated Edge TPU; no model runs (%s; --engine cpu or auto runs real models)"
            % (", ".join(fake), reads))


def load_config(args: argparse.Namespace):
    """The config file (overlaid on config.toml) with the command-line options, checked as one."""
    return load(args.config, profile=args.profile, engine=args.engine, source=args.source,
                display=args.display, place=args.place, encoder=args.encoder,
                fer_workers=args.fer_workers, metrics_endpoint=args.metrics_endpoint, mqtt=args.mqtt,
                name=args.name, camera=args.camera)


async def _run_with_signals(cfg, opts) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    presses = []

    def on_signal(signame: str) -> None:
        presses.append(signame)
        if len(presses) == 1:
            log.info("%s: stopping (again to abort)", signame)
            stop.set()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    def announce(p) -> None:  # ready: where outside clients attach, on stdout for scripts (docs/wire.md)
        print("results %s\nmetrics %s" % (p.cfg.endpoints.results, p.cfg.endpoints.metrics), flush=True)

    try:
        return await run(cfg, opts, stop, on_ready=announce)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_main(args: argparse.Namespace) -> int:
    """Run the pipeline with the options ``pipeline.cli.run_parser`` parsed."""
    setup_logging(args.verbose)
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print("config error: %s" % exc, file=sys.stderr)
        return 2
    opts = RunOptions(frames=args.frames, duration_s=args.duration, results_path=args.results)
    for name, cam in (cfg.cameras or {"": cfg.pipeline}).items():  # each camera's source, or pipeline.source
        cam.source, why = resolve_source(cam.source)
        if why:
            print("edgepipe: %ssource auto: %s (%s)" % ("camera %s: " % name if name else "", cam.source, why),
                  file=sys.stderr, flush=True)
        if cam.source in ("demo", "demo:unpaced"):
            print("edgepipe: %s" % demo_notice(cam.source, cfg.capture.loop,
                                               args.frames is not None or args.duration is not None),
                  file=sys.stderr, flush=True)
    try:
        placed = place(cfg, warn=False, fetch=True)  # missing model files: fetched now, or one message
        for pl in placed.values():
            print("edgepipe: %s" % pl.describe(), file=sys.stderr, flush=True)
        sources = [c.source for c in cfg.camera_list().values()]
        banner = fake_banner({r: pl.engine for r, pl in placed.items()},
                             "synthetic" if all(x.startswith("synthetic") for x in sources) else ", ".join(sources))
        if banner:
            print("edgepipe: %s" % banner, file=sys.stderr, flush=True)
    except (ConfigError, EngineError) as exc:
        print("config error: %s" % exc, file=sys.stderr)
        return 2
    try:
        summary = event_loop_run(_run_with_signals(cfg, opts))
    except (SourceError, DisplayError, BusError, EngineError, ConfigError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except RuntimeError as exc:  # an actor or a group died: its error was logged with its name
        summary = getattr(exc, "summary", None)
        if summary is not None:  # it died mid-run: what was done and what was lost
            print(human_summary(summary))
            write_summary(args.summary, summary)
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("aborted", file=sys.stderr)
        return 130
    print(human_summary(summary))
    write_summary(args.summary, summary)
    empty = no_frame(summary)
    if empty:  # a run that processed nothing failed, whatever the source's error was
        print("error: %s" % empty, file=sys.stderr)
        return 1
    return 0


def write_summary(path: Optional[str], summary: Dict[str, Any]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)


def group_main(argv: List[str]) -> int:
    """``run.py group NAME --config PATH``: run one group alone (by hand, another host or venv)."""
    ap = argparse.ArgumentParser(prog="run.py group", description="run one process group of the config")
    ap.add_argument("name")
    ap.add_argument("--config", help="a config file overlaid on config.toml beside run.py")
    ap.add_argument("--engine", help="fake | cpu | edgetpu")
    ap.add_argument("--profile")
    ap.add_argument("-v", "--verbose", action="count", default=1)
    args = ap.parse_args(argv)
    extra = ["-v"] * max(0, args.verbose - 1)
    if args.engine or args.profile:  # apply the overrides, then hand the result over as JSON
        try:
            cfg = load(args.config, engine=args.engine, profile=args.profile)
        except ConfigError as exc:
            print("config error: %s" % exc, file=sys.stderr)
            return 2
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(to_dict(cfg), fh)
        try:
            return group.main(["--name", args.name, "--config-json", fh.name] + extra)
        finally:
            os.unlink(fh.name)
    return group.main(["--name", args.name] + (["--config", args.config] if args.config else []) + extra)
