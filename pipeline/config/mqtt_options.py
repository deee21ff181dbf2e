"""The ``--mqtt`` URL and the checks of the ``[mqtt]`` section that span several keys."""
import os
import re
from typing import Any, Dict
from urllib.parse import unquote, urlsplit

from edgepipe.pipeline.config.sections import ConfigError, MqttConfig

_MQTT_NAME = re.compile(r"^[A-Za-z0-9_.-]*$")


def check_mqtt(m: MqttConfig) -> None:
    for key in ("name", "topic_prefix", "discovery_prefix"):
        value = getattr(m, key)
        if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ConfigError("mqtt.%s: %r is not a topic (no +, #, NUL, leading or trailing /)" % (key, value))
    if not _MQTT_NAME.match(m.name):
        raise ConfigError("mqtt.name: %r: use letters, digits, '_', '-' and '.' only" % m.name)
    if m.reconnect_min_s > m.reconnect_max_s:
        raise ConfigError("mqtt.reconnect_min_s: %r is above mqtt.reconnect_max_s %r"
                          % (m.reconnect_min_s, m.reconnect_max_s))
    if m.ca_file and not os.path.isfile(m.ca_file):
        raise ConfigError("mqtt.ca_file: %s is not a file" % m.ca_file)
    if (m.ca_file or m.tls_insecure) and not m.tls:
        raise ConfigError("mqtt.ca_file/tls_insecure: set mqtt.tls = true (or use an mqtts:// URL)")


def mask_url(url: str) -> str:
    """The URL with its password as ``***`` (for messages)."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


def parse_mqtt_url(url: str) -> Dict[str, Any]:
    """``mqtt://[USER[:PASS]@]HOST[:PORT]`` or ``mqtts://...`` -> the [mqtt] keys it sets."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ConfigError("%r is not an MQTT URL (%s)" % (mask_url(url), exc)) from None
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ConfigError("%r: expected mqtt://[USER:PASS@]HOST[:PORT] or mqtts://..." % mask_url(url))
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ConfigError("%r: an MQTT URL has no path or query; set the topic prefix with mqtt.topic_prefix"
                          % mask_url(url))
    tls = u.scheme == "mqtts"
    out: Dict[str, Any] = {"host": u.hostname, "port": port if port is not None else (8883 if tls else 1883), "tls": tls}
    if u.username is not None:
        out["user"] = unquote(u.username)
    if u.password is not None:
        out["password"] = unquote(u.password)
    return out
