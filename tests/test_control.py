"""The control endpoint between groups and the main process: typed Ready, final Metric and Stopped messages,
over a real PUSH/PULL pair as a group sends them."""
from __future__ import annotations

import zmq
from helpers import inproc_config, run_async

from edgepipe.bus.control import gone
from edgepipe.bus.messages import Eos, Metric, Ready, Stopped
from edgepipe.pipeline.config.loading import GroupConfig
from edgepipe.pipeline.processes.supervisor import GroupProcess, handle_control


def test_ready_final_metrics_and_stopped_reach_their_group(bus):
    cfg = inproc_config()
    cfg.groups = {"tpu": GroupConfig(actors=["detector", "fer"]), "other": GroupConfig(actors=["encoder"])}
    groups = {name: GroupProcess(name, cfg, "unused.json") for name in cfg.groups}

    async def main():
        pull = bus.pull("inproc://control-test", hwm=100, bind=True, name="runner.control")
        push = bus.push("inproc://control-test", hwm=100, bind=False, name="tpu.control")
        try:
            await push.send(Ready("tpu", 4242, "/venv/bin/python", "3.9.18", ["detector", "fer-0"],
                                  {"detector": "blazeface", "fer": "fer64"}))
            await push.send(Metric("detector", 4242, 10.0, {"in": 7, "out": 7}, {"fps": 3.5}))  # not final
            await push.send(Metric("detector", 4242, 11.0, {"in": 9, "out": 8, "dropped": 1}, {"fps": 3.0}, True))
            await push.send(Metric("fer-0", 4242, 11.0, {"in": 16, "out": 16}, {}, True))
            await push.send(Metric("stranger", 1, 11.0, {"in": 1}, {}, True))  # no ready group runs it
            await push.send(Eos("capture", 8, 9))  # not a control message: ignored
            await push.send(Stopped("tpu", 0, ["detector", "fer-0"]))
            for _ in range(7):
                handle_control(await pull.recv(), groups)
        finally:
            pull.close()
            push.close()
    run_async(main())

    tpu = groups["tpu"]
    assert tpu.ready is not None and tpu.ready.pid == 4242 and tpu.ready.version == "3.9.18"
    assert tpu.ready.actors == ["detector", "fer-0"]
    assert set(tpu.final) == {"detector", "fer-0"}
    assert tpu.final["detector"].final and tpu.final["detector"].counters == {"in": 9, "out": 8, "dropped": 1}
    assert tpu.stopped is not None and tpu.stopped.rc == 0
    other = groups["other"]
    assert other.ready is None and other.final == {} and other.stopped is None


def test_a_reused_descriptor_is_not_a_group_going_away():
    """A file descriptor is reused: an earlier connection's disconnect on the group's descriptor, followed by
    the accept of the group's own connection, is not the group going away; its own disconnect is."""
    acc, dis = zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED
    fds = {"g": 23, "h": 24}
    assert gone([{"event": acc, "value": 23}, {"event": dis, "value": 23}, {"event": acc, "value": 23}], fds) is None
    assert gone([{"event": acc, "value": 23}, {"event": dis, "value": 23}], fds) == "g"
    assert gone([{"event": dis, "value": 99}, {"event": acc, "value": 24}], fds) is None
    assert gone([{"event": acc, "value": 24}, {"event": dis, "value": 24}], fds) == "h"
