"""Freshness: everything this SDK covers exists, field for field, in the server's own OpenAPI
document (`GET /api/v1/openapi.json`), and every field of a covered schema is in the SDK. A change
of the API that the SDK does not follow fails here."""

from __future__ import annotations

import dataclasses
import inspect
import os

import httpx
import pytest

from lap_sdk import _calls, models
from lap_sdk.client import Agents

DOC = httpx.get(os.environ["LAP_URL"] + "/api/v1/openapi.json", timeout=30).raise_for_status().json()
SCHEMAS = DOC["components"]["schemas"]

MODELS = [
    obj
    for obj in vars(models).values()
    if isinstance(obj, type) and "SCHEMA" in vars(obj) and dataclasses.is_dataclass(obj)
]
ENUMS = models.ENUM_SCHEMAS
# Schemas whose variants the SDK models by hand (checked below, one by one).
HAND_MODELLED = {"Part", "Event"}


def properties(name: str) -> set[str]:
    return set(SCHEMAS[name].get("properties", {}))


def test_every_route_the_sdk_calls_is_documented() -> None:
    missing = [(method, path) for method, path in _calls.ROUTES if method not in DOC["paths"].get(path, {})]
    assert missing == []


def test_every_parameter_the_sdk_sends_is_documented() -> None:
    for (method, path), sent in _calls.PARAMS.items():
        documented = {p["name"] for p in DOC["paths"][path][method].get("parameters", []) if p["in"] in ("query", "header")}
        assert sent <= documented, (method, path, sent - documented)


@pytest.mark.parametrize("model", [m for m in MODELS if m.SCHEMA not in HAND_MODELLED], ids=lambda m: m.__name__)
def test_a_models_fields_are_its_schemas_properties(model: type) -> None:
    fields = {f.metadata.get("json", f.name) for f in dataclasses.fields(model)}
    assert fields == properties(model.SCHEMA)
    required = set(SCHEMAS[model.SCHEMA].get("required", []))
    without_default = {
        f.metadata.get("json", f.name)
        for f in dataclasses.fields(model)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert without_default <= required, "a field the server may leave out needs a default"


@pytest.mark.parametrize("enum", list(ENUMS), ids=lambda e: e.__name__)
def test_an_enums_values_are_its_schemas(enum: type) -> None:
    assert {e.value for e in enum} == set(SCHEMAS[ENUMS[enum]]["enum"])


def test_agent_create_and_update_take_every_field_of_their_bodies() -> None:
    create = set(inspect.signature(Agents.create).parameters) - {"self"}
    update = set(inspect.signature(Agents.update).parameters) - {"self", "agent"}
    assert create == properties("CreateAgent")
    assert update == properties("UpdateAgent")


def test_the_small_request_bodies_are_what_the_sdk_sends() -> None:
    assert properties("ExecCommand") == {"command", "stdin", "cwd"}
    assert properties("CreateSession") == {"title"}
    assert properties("CreateSnapshot") == {"name"}
    assert properties("SessionFromSnapshot") == {"agent", "title"}
    assert properties("CreatePreviewUrl") == {"port", "ttl_seconds"}
    # A message is `text` or `parts` (or both): one object schema per way, as `anyOf`.
    variants = SCHEMAS["SendMessage"]["anyOf"]
    assert set().union(*(v["properties"] for v in variants)) == {"text", "parts"}


def test_exec_events_and_stream_frames_have_the_documented_variants() -> None:
    exec_keys = [next(iter(v["properties"])) for v in SCHEMAS["ExecEvent"]["oneOf"]]
    assert sorted(exec_keys) == sorted(models.EXEC_EVENT_KEYS)
    frame_types = {v["properties"]["type"]["enum"][0] for v in SCHEMAS["StreamFrame"]["oneOf"]}
    assert frame_types == set(models.STREAM_FRAME_TYPES)
    part_types = {v["properties"]["type"]["enum"][0] for v in SCHEMAS["Part"]["oneOf"]}
    assert part_types == {"text", "reasoning", "tool"}
    part_fields = set().union(*(v["properties"] for v in SCHEMAS["Part"]["oneOf"]))
    assert part_fields == {"type", "id", "text", "tool", "callID", "state"}


def test_an_event_is_its_kind_plus_seq_time_session_and_turn() -> None:
    kind_ref, own = SCHEMAS["Event"]["allOf"]
    assert kind_ref["$ref"].endswith("/EventKind")
    kinds = SCHEMAS["EventKind"]["oneOf"]
    assert all(set(k["properties"]) == {"type", "data"} for k in kinds)
    fields = {f.name for f in dataclasses.fields(models.Event)}
    assert fields == set(own["properties"]) | {"type", "data"}


def test_errors_are_the_documented_envelope() -> None:
    assert properties("ErrorBody") == {"error", "hint"}


def test_a_message_reply_is_a_message_or_a_tui_reply() -> None:
    reply = DOC["paths"]["/api/v1/managed_agents/sessions/{id}/message"]["post"]["responses"]["200"]
    assert reply["content"]["application/json"]["schema"]["$ref"].endswith("/MessageReply")
    variants = {v["$ref"].rsplit("/", 1)[1] for v in SCHEMAS["MessageReply"]["oneOf"]}
    assert variants == {"Message", "TuiReply"}
