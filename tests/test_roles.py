"""The table of roles (actors/roles.py) is the one description of the actors, and what reads it agrees."""
from __future__ import annotations

import inspect
import typing
from pathlib import Path

from helpers import inproc_config

from edgepipe.actors import roles
from edgepipe.actors.roles import ENGINE_ROLES, MOVABLE, ORDER, ROLES, role_of, users
from edgepipe.pipeline.build import RunOptions, build
from edgepipe.pipeline.config.sections import Config, PlacementConfig, endpoint_names
from edgepipe.pipeline.processes import groups


def test_every_role_names_real_endpoints_and_a_section_its_actor_takes():
    assert len({r.name for r in ROLES}) == len(ROLES)
    eps = set(endpoint_names())
    for r in ROLES:
        assert set(r.endpoints) <= eps, r.name
        params = list(inspect.signature(r.actor.__init__).parameters)
        if r.section is None:
            assert params[1:5] == ["name", "bus", "endpoints", "context"], (r.name, params)
        else:
            assert params[1:6] == ["name", "bus", "section", "endpoints", "context"], (r.name, params)
            hints = typing.get_type_hints(r.actor.__init__)
            assert hints["section"] is typing.get_type_hints(Config)[r.section], r.name
    # each endpoint has one binder in a run (the detector and the classifier are never in the same run)
    for ep in eps:
        binders = {r.name for r in ROLES if ep in r.binds}
        assert len(binders) <= 1 or binders == {"detector", "classifier"}, ep


def test_the_order_runs_from_the_source_to_the_sinks_and_starts_consumers_first():
    assert ORDER[0] == "capture" and ORDER[-1] == "metrics"
    assert [r.name for r in ROLES] == list(reversed(ORDER))
    start = [r.name for r in ROLES]
    for r in ROLES:  # a role starts after every role that connects to what it publishes
        if r.publishes:
            for other in ROLES:  # but the source, last of all: its credits close the loop (results -> capture)
                if r.publishes in other.connects and other.name != "capture":
                    assert start.index(other.name) < start.index(r.name), (other.name, r.name)


def test_groups_placement_and_config_read_the_table():
    assert set(PlacementConfig.__struct_fields__) == set(ENGINE_ROLES)
    assert groups.MOVABLE == MOVABLE and set(groups.MAIN_ONLY) == {r.name for r in ROLES if not r.movable}
    assert groups.LINKS["frames"] == ("capture", "display", "encoder")  # capture binds; the others connect
    assert groups.LINKS["expressions"][0] == "aggregator" and "fer" in groups.LINKS["expressions"]
    assert users("metrics_in")[0] == "metrics" and set(users("metrics_in")) == {r.name for r in ROLES}
    assert role_of("fer-12") is roles.BY_NAME["fer"] and role_of("detector-1") is None and role_of("x") is None


def test_build_makes_the_table_s_actors_in_start_order(bus):
    cfg = inproc_config(pipeline={"source": "synthetic:faces=1", "display": "none"})
    p = build(cfg, bus, RunOptions(frames=1))
    names = [a.name for a in p.actors]
    assert names == ["metrics", "resources", "recorder", "aggregator", "fer-0", "fer-1", "detector", "encoder",
                     "capture"]
    for a in p.actors:
        role = role_of(a.name)
        assert role is not None and isinstance(a, role.actor)
        assert set(a.endpoints) == set(role.endpoints) and a.context.order == ORDER


def test_the_readme_shows_the_table_of_roles():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert roles.markdown() in readme, "README.md's table of roles is out of date: paste roles.markdown()"
