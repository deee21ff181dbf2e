"""--mqtt URLs, the [mqtt] section, and the face-track events computed from results."""
from __future__ import annotations

import pytest

from edgepipe.actors.sinks.mqtt_payloads import Topics, TrackEvents, discovery_configs, dominant, dumps, result_payload
from edgepipe.bus.messages import Box, FaceResult, Result
from edgepipe.pipeline.config import loading as config
from edgepipe.pipeline.config.loading import ConfigError


def test_mqtt_url_sets_host_port_user_password_and_tls():
    cfg = config.load(mqtt="mqtt://cam%40home:p%3Ass@broker.lan:1884")
    m = cfg.mqtt
    assert (m.host, m.port, m.user, m.password, m.tls) == ("broker.lan", 1884, "cam@home", "p:ss", False)
    m = config.load(mqtt="mqtts://10.0.0.2").mqtt
    assert (m.host, m.port, m.tls, m.user) == ("10.0.0.2", 8883, True, "")
    assert config.load(mqtt="mqtt://[::1]").mqtt.host == "::1"
    assert config.load().mqtt.host == ""  # off by default


@pytest.mark.parametrize("url, words", [
    ("http://host", "expected mqtt://"),
    ("mqtt://", "expected mqtt://"),
    ("mqtt://host/topic", "no path"),
    ("mqtt://user:secret@host:99999", "not an MQTT URL"),
    ("mqtt://user:secret@host:0", "mqtt.port: 0 is below the minimum 1"),
])
def test_bad_mqtt_url_names_the_option_and_hides_the_password(url, words):
    with pytest.raises(ConfigError) as e:
        config.load(mqtt=url)
    msg = str(e.value)
    assert msg.startswith("--mqtt") or "--mqtt" in msg, msg
    assert words in msg
    assert "secret" not in msg


def test_mqtt_section_refuses_unknown_keys_and_bad_values(tmp_path):
    data = config.to_dict(config.load())
    data["mqtt"]["hots"] = "x"
    with pytest.raises(ConfigError, match=r"mqtt\.hots: unknown key"):
        config.from_dict(data)
    for key, value, words in [("qos", 3, "mqtt.qos: 3 is above the maximum 2"),
                              ("topic_prefix", "cams/#", "mqtt.topic_prefix: 'cams/#' is not a topic"),
                              ("name", "front door", "mqtt.name: 'front door'"),
                              ("ca_file", str(tmp_path / "missing.pem"), "is not a file"),
                              ("tls_insecure", True, "set mqtt.tls = true")]:
        data = config.to_dict(config.load())
        data["mqtt"][key] = value
        with pytest.raises(ConfigError) as e:
            config.from_dict(data)
        assert words in str(e.value)


def _result(fid, faces):
    return Result(fid, 1.0, 1.5, 640, 480, [FaceResult(Box(*box, 0.9), label, 0.8, tid, smoothed)
                                           for box, label, tid, smoothed in faces], False, True)


def test_track_events_appeared_changed_gone():
    ev = TrackEvents(gone_after=3)
    a, b = (0, 0, 10, 10), (100, 100, 120, 120)
    got = ev.update(_result(0, [(a, "happy", 0, "happy"), (b, "sad", 1, "sad")]))
    assert [(e["event"], e["track"], e["expression"]) for e in got] == [("appeared", 0, "happy"),
                                                                         ("appeared", 1, "sad")]
    assert ev.update(_result(1, [(a, "sad", 0, "happy"), (b, "sad", 1, "sad")])) == []  # smoothing held
    got = ev.update(_result(2, [(a, "sad", 0, "sad")]))
    assert [(e["event"], e["track"], e["expression"], e["previous"]) for e in got] == [("expression", 0, "sad",
                                                                                        "happy")]
    assert ev.update(_result(4, [(a, "sad", 0, "sad")])) == []
    got = ev.update(_result(5, [(a, "sad", 0, "sad")]))  # track 1 last seen in frame 1: 4 frames ago
    assert [(e["event"], e["track"], e["reason"], e["last_frame_id"]) for e in got] == [("gone", 1, "unseen", 1)]
    got = ev.end(5)
    assert [(e["event"], e["track"], e["reason"]) for e in got] == [("gone", 0, "end")]
    assert ev.tracks == {}


def test_state_changes_only_when_count_or_dominant_expression_does():
    ev = TrackEvents()
    a, b, c = (0, 0, 10, 10), (20, 20, 30, 30), (40, 40, 50, 50)
    r = _result(0, [(a, "happy", 0, "happy"), (b, "sad", 1, "sad"), (c, "sad", 2, "sad")])
    assert dominant(r) == "sad"
    assert ev.state_change(r)["faces"] == 3
    assert ev.state_change(_result(1, [(a, "happy", 0, "happy"), (b, "sad", 1, "sad"), (c, "sad", 2, "sad")])) is None
    s = ev.state_change(_result(2, []))
    assert (s["faces"], s["expression"], s["frame_id"]) == (0, None, 2)


def test_payloads_are_json_with_documented_fields():
    t = Topics("kitchen")
    assert (t.availability, t.camera("default").events, t.discovery("faces")) == ("edgepipe/kitchen/availability",
                                                                 "edgepipe/kitchen/events",
                                                                 "homeassistant/sensor/kitchen/faces/config")
    configs = discovery_configs(t, "fd+fer64", "0.1.0")
    faces = configs["homeassistant/sensor/kitchen/faces/config"]
    assert faces["state_topic"] == "edgepipe/kitchen/state" and faces["availability_topic"] == t.availability
    assert faces["device"]["identifiers"] == ["edgepipe_kitchen"]
    assert configs["homeassistant/sensor/kitchen/expression/config"]["device"] == faces["device"]
    r = _result(7, [((1.04, 2, 3, 4), "happy", 0, "happy")])
    r.faces[0].confidence = None
    p = result_payload(r)
    assert p["frame_id"] == 7 and p["faces"][0]["box"] == [1.0, 2, 3, 4] and p["faces"][0]["confidence"] is None
    assert dumps(p).startswith(b"{")
