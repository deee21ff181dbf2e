"""The Prometheus exporter, read back with prometheus_client's own parser."""
from __future__ import annotations

import asyncio
import math
import urllib.request

from helpers import inproc_config, run_async
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from edgepipe.bus.messages import Metric
from edgepipe.pipeline.metrics.cli import export
from edgepipe.pipeline.metrics.prometheus import COUNTERS, REJECT_REASONS, Exporter, render

OPENMETRICS = "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
from edgepipe.pipeline.runner import RunOptions, run


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams, name, **labels):
    """The samples of family ``name`` whose labels include ``labels``."""
    return [s for f in fams.values() for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def test_render_documents_every_family_in_base_units():
    m = Metric("fer-0", 42, 10.0, counters={"in": 7, "out": 7, "dropped.transport": 2, "dropped": 2},
               gauges={"fps": 12.5, "busy_pct": 50.0, "busy_ms_p50": 4.0, "busy_ms_p99": 9.0, "uptime_s": 3.0,
                       "on.fake:0": 1.0, "device.fake:0.busy_pct": 40.0, "device.fake:0.invokes": 99.0,
                       "resources.temp_c": 51.5, "odd": math.nan})
    text = render({"fer-0": m})
    fams = families(text)
    for f in fams.values():
        assert f.documentation and f.type in ("counter", "gauge"), f
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f
    assert samples(fams, "edgepipe_up")[0].value == 1.0
    assert samples(fams, "edgepipe_busy_p50_seconds", actor="fer-0")[0].value == 0.004
    assert samples(fams, "edgepipe_busy_ratio", actor="fer-0")[0].value == 0.5
    assert samples(fams, "edgepipe_uptime_seconds", actor="fer-0")[0].value == 3.0
    assert samples(fams, "edgepipe_device_busy_ratio", actor="fer-0", device="fake:0")[0].value == 0.4
    assert samples(fams, "edgepipe_device_invokes_total", device="fake:0")[0].value == 99.0
    assert samples(fams, "edgepipe_runs_on", device="fake:0")[0].value == 1.0
    assert samples(fams, "edgepipe_resources_temp_celsius", actor="fer-0")[0].value == 51.5
    assert math.isnan(samples(fams, "edgepipe_odd", actor="fer-0")[0].value)
    # every counter a FER worker keeps is there, at 0 until it counts; drops and rejects by reason too
    for name in COUNTERS["fer"]:
        assert samples(fams, "edgepipe_%s_total" % name, actor="fer-0"), name
    assert samples(fams, "edgepipe_restarts_total", actor="fer-0")[0].value == 0.0
    assert samples(fams, "edgepipe_dropped_by_reason_total", actor="fer-0", reason="transport")[0].value == 2.0
    for reason in REJECT_REASONS:
        assert samples(fams, "edgepipe_rejected_by_reason_total", actor="fer-0", reason=reason)[0].value == 0.0
    assert not any("_ms" in name for name in fams)
    # nothing: only edgepipe_up, at 0
    fams = families(render({}))
    assert list(fams) == ["edgepipe_up"] and samples(fams, "edgepipe_up")[0].value == 0.0


def test_a_gauge_that_maps_onto_a_family_of_the_other_type_is_kept_apart():
    m = Metric("fer-0", 42, 10.0, counters={"in": 7, "faces": 3},
               gauges={"in": 4.0, "in_total": 5.0, "faces_total": 6.0, "device.fake:0.invokes": 9.0,
                       "device_invokes_total": 2.0})
    text = render({"fer-0": m})
    fams = families(text)
    assert fams["edgepipe_in"].type == "counter" and samples(fams, "edgepipe_in_total")[0].value == 7.0
    assert fams["edgepipe_faces"].type == "counter" and samples(fams, "edgepipe_faces_total")[0].value == 3.0
    assert fams["edgepipe_device_invokes"].type == "counter"
    assert samples(fams, "edgepipe_device_invokes_total", device="fake:0")[0].value == 9.0
    gauges = {s.name: s.value for f in fams.values() if f.type == "gauge" for s in f.samples}
    assert gauges == {"edgepipe_up": 1.0, "edgepipe_in_gauge": 4.0, "edgepipe_in_total_gauge": 5.0,
                      "edgepipe_faces_total_gauge": 6.0, "edgepipe_device_invokes_total_gauge": 2.0}
    lines = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == len(set(lines))  # no series twice


def test_exporter_negotiates_its_own_registry_and_forgets_actors():
    def get(url, accept=None):
        req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.headers["Content-Type"], r.read().decode()

    exporter = Exporter("127.0.0.1", 0, stale_after=60.0, source="ipc://x")
    exporter.start()
    try:
        base = "http://%s:%d/metrics" % exporter.address
        exporter.update(Metric("detector", 1, 1.0, counters={"in": 5}, gauges={"on.fake:0": 1.0}))
        exporter.update(Metric("capture", 2, 1.0, counters={"out": 9}))
        ctype, text = get(base)
        assert ctype.startswith("text/plain; version=0.0.4")
        fams = families(text)
        assert all(name.startswith("edgepipe_") for name in fams)  # not prometheus_client's global registry
        assert samples(fams, "edgepipe_in_total", actor="detector")[0].value == 5.0
        ctype, text = get(base, OPENMETRICS)  # what a Prometheus asks for first
        # its content type says version=0.0.1 under prometheus_client 0.17, 1.0.0 under 0.26
        assert ctype.startswith("application/openmetrics-text;") and text.endswith("# EOF\n")
        om = {f.name: f for f in openmetrics_families(text)}
        assert om["edgepipe_in"].type == "counter" and om["edgepipe_runs_on"].type == "gauge"
        assert samples(om, "edgepipe_out_total", actor="capture")[0].value == 9.0
        exporter.update(Metric("detector", 1, 2.0, final=True))  # it ended: its series go
        fams = families(get(base)[1])
        assert not samples(fams, "edgepipe_in_total", actor="detector")
        assert samples(fams, "edgepipe_out_total", actor="capture")[0].value == 9.0
        with exporter.lock:  # last heard from past stale_after: forgotten
            exporter.heard["capture"] -= 61.0
        fams = families(get(base)[1])
        assert list(fams) == ["edgepipe_up"] and samples(fams, "edgepipe_up")[0].value == 0.0
    finally:
        exporter.close()


def test_exporter_serves_a_pipeline_and_forgets_it_when_it_goes(tmp_path):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=2,fps=60"}, bus={"metrics_interval_s": 0.1})
    cfg.endpoints.metrics = "ipc://%s" % (tmp_path / "metrics")
    got = {}
    holder = {}

    def get(url):
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.headers["Content-Type"], r.read().decode()

    def running(fams):
        """Every stage has done work and the states asserted below are there: the detector's FPS over a
        finished metrics window, the aggregator's latency, where the detector runs."""
        outs = {s.labels["actor"]: s.value for s in samples(fams, "edgepipe_out_total")}
        return (all(outs.get(a, 0) > 0 for a in ("capture", "detector", "fer-0", "fer-1", "aggregator"))
                and any(s.value > 0 for s in samples(fams, "edgepipe_fps", actor="detector"))
                and any(s.value > 0 for s in samples(fams, "edgepipe_latency_p50_seconds", actor="aggregator"))
                and bool(samples(fams, "edgepipe_runs_on", actor="detector", device="fake:0")))

    def gone(fams):  # the pipeline's series are gone (final snapshots, or silence past stale_after)
        return not any("actor" in s.labels for f in fams.values() for s in f.samples)

    def scrape_until(base, done):
        """Scrape after each snapshot the exporter takes in until ``done(families)``; that scrape."""
        exporter, seen = holder["e"], 0
        while True:
            ctype, text = get(base + "/metrics")
            fams = families(text)
            if done(fams):
                return ctype, fams
            seen = exporter.wait_update(seen, timeout=1.0)  # wakes on the next snapshot (or the stale timer)

    def scrape_running(base):
        got["index"] = get(base + "/")
        got["ctype"], got["running"] = scrape_until(base, running)

    def scrape_gone(base):
        got["gone"] = scrape_until(base, gone)[1]

    async def main():
        stop, exporter_stop = asyncio.Event(), asyncio.Event()
        ready, exporter_ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        runner = asyncio.ensure_future(run(cfg, RunOptions(frames=100000), stop, on_ready=lambda p: ready.set()))
        exporter = None
        try:
            await ready.wait()
            exporter = asyncio.ensure_future(export(cfg.endpoints.metrics, "127.0.0.1", 0, exporter_stop,
                                                    on_ready=lambda e: (holder.update(e=e), exporter_ready.set()),
                                                    stale_after=1.0))
            await exporter_ready.wait()
            base = "http://%s:%d" % holder["e"].address
            await loop.run_in_executor(None, scrape_running, base)
            stop.set()
            await runner
            await loop.run_in_executor(None, scrape_gone, base)
        finally:
            stop.set()
            await runner
            exporter_stop.set()
            if exporter is not None:
                assert await exporter == 0

    run_async(main())
    fams = got["running"]
    assert got["ctype"].startswith("text/plain; version=0.0.4")
    assert "/metrics" in got["index"][1] and got["index"][0].startswith("text/html")
    assert samples(fams, "edgepipe_up")[0].value == 1.0
    for f in fams.values():
        assert f.documentation, f.name
    assert samples(fams, "edgepipe_fps", actor="detector")[0].value > 0
    assert samples(fams, "edgepipe_restarts_total", actor="detector")[0].value == 0.0  # there from the start
    assert samples(fams, "edgepipe_dropped_by_reason_total", actor="detector", reason="engine_timeout")
    assert samples(fams, "edgepipe_latency_p50_seconds", actor="aggregator")[0].value > 0
    assert samples(fams, "edgepipe_runs_on", actor="detector", device="fake:0")
    gone = got["gone"]
    assert list(gone) == ["edgepipe_up"] and samples(gone, "edgepipe_up")[0].value == 0.0
