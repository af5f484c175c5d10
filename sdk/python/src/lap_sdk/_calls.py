"""What each API call sends and how its answer is read, shared by the sync and async clients.

A `Call` is a method, a path under the server's URL, query, body and a parser of the JSON answer;
the clients only carry it out. `ROUTES` lists every (method, path template) this SDK uses, for the
freshness test against the server's OpenAPI document.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from . import models as m

PREFIX = "/api/v1/managed_agents"

# Every route this SDK calls, as the OpenAPI document spells it.
ROUTES: list[tuple[str, str]] = [
    ("get", "/api/v1/health"),
    ("get", f"{PREFIX}/agents"),
    ("post", f"{PREFIX}/agents"),
    ("get", f"{PREFIX}/agents/{{id}}"),
    ("patch", f"{PREFIX}/agents/{{id}}"),
    ("delete", f"{PREFIX}/agents/{{id}}"),
    ("post", f"{PREFIX}/agents/{{id}}/session"),
    ("get", f"{PREFIX}/sessions"),
    ("get", f"{PREFIX}/sessions/{{id}}"),
    ("delete", f"{PREFIX}/sessions/{{id}}"),
    ("post", f"{PREFIX}/sessions/{{id}}/restart"),
    ("post", f"{PREFIX}/sessions/{{id}}/pause"),
    ("post", f"{PREFIX}/sessions/{{id}}/resume"),
    ("post", f"{PREFIX}/sessions/{{id}}/hibernate"),
    ("post", f"{PREFIX}/sessions/{{id}}/fork"),
    ("get", f"{PREFIX}/sessions/{{id}}/workspace"),
    ("get", f"{PREFIX}/sessions/{{id}}/vault-keys"),
    ("get", f"{PREFIX}/sessions/{{id}}/interceptions"),
    ("post", f"{PREFIX}/sessions/{{id}}/exec"),
    ("post", f"{PREFIX}/sessions/{{id}}/snapshots"),
    ("get", f"{PREFIX}/snapshots"),
    ("delete", f"{PREFIX}/snapshots/{{name}}"),
    ("post", f"{PREFIX}/snapshots/{{name}}/session"),
    ("get", f"{PREFIX}/sessions/{{id}}/files"),
    ("delete", f"{PREFIX}/sessions/{{id}}/files"),
    ("get", f"{PREFIX}/sessions/{{id}}/files/stat"),
    ("get", f"{PREFIX}/sessions/{{id}}/files/content"),
    ("put", f"{PREFIX}/sessions/{{id}}/files/content"),
    ("post", f"{PREFIX}/sessions/{{id}}/message"),
    ("post", f"{PREFIX}/sessions/{{id}}/message_stream"),
    ("get", f"{PREFIX}/sessions/{{id}}/messages"),
    ("get", f"{PREFIX}/sessions/{{id}}/events"),
    ("post", f"{PREFIX}/sessions/{{id}}/abort"),
    ("get", f"{PREFIX}/sessions/{{id}}/ports"),
    ("post", f"{PREFIX}/sessions/{{id}}/preview_urls"),
    ("delete", f"{PREFIX}/sessions/{{id}}/preview_urls"),
    ("get", f"{PREFIX}/sessions/{{id}}/ports/{{port}}/{{path}}"),
]


# The query parameters (and headers) this SDK sends, by route, for the same test.
PARAMS: dict[tuple[str, str], set[str]] = {
    ("get", f"{PREFIX}/agents"): {"limit", "offset", "search"},
    ("get", f"{PREFIX}/sessions"): {"agent_id", "limit"},
    ("get", f"{PREFIX}/sessions/{{id}}/interceptions"): {"after", "limit"},
    ("get", f"{PREFIX}/sessions/{{id}}/files"): {"path"},
    ("delete", f"{PREFIX}/sessions/{{id}}/files"): {"path", "recursive"},
    ("get", f"{PREFIX}/sessions/{{id}}/files/stat"): {"path"},
    ("get", f"{PREFIX}/sessions/{{id}}/files/content"): {"path", "archive", "Range"},
    ("put", f"{PREFIX}/sessions/{{id}}/files/content"): {"path", "archive", "mode"},
    ("post", f"{PREFIX}/sessions/{{id}}/message_stream"): {"format"},
    ("get", f"{PREFIX}/sessions/{{id}}/events"): {"after", "format"},
    ("delete", f"{PREFIX}/sessions/{{id}}/preview_urls"): {"port"},
}


T = TypeVar("T")


def _raw(body: Any) -> Any:
    return body


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T] = _raw
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def seg(value: str) -> str:
    """One path segment, escaped."""
    return quote(str(value), safe="")


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _body(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list):
        return [_body(v) for v in value]
    return value


# Agents.


def list_agents(limit: int | None, offset: int | None, search: str | None) -> Call[m.AgentList]:
    params = _drop_none({"limit": limit, "offset": offset, "search": search})
    return Call("GET", f"{PREFIX}/agents", m.AgentList.from_json, params=params)


def create_agent(fields: Mapping[str, Any]) -> Call[m.Agent]:
    return Call("POST", f"{PREFIX}/agents", m.Agent.from_json, json=_drop_none({k: _body(v) for k, v in fields.items()}))


def get_agent(agent: str) -> Call[m.Agent]:
    return Call("GET", f"{PREFIX}/agents/{seg(agent)}", m.Agent.from_json)


def update_agent(agent: str, fields: Mapping[str, Any]) -> Call[m.Agent]:
    body = _drop_none({k: _body(v) for k, v in fields.items()})
    return Call("PATCH", f"{PREFIX}/agents/{seg(agent)}", m.Agent.from_json, json=body)


def delete_agent(agent: str) -> Call[None]:
    return Call("DELETE", f"{PREFIX}/agents/{seg(agent)}", lambda _: None)


# Sessions.


def create_session(agent: str, title: str | None) -> Call[m.Session]:
    body = _drop_none({"title": title})
    return Call("POST", f"{PREFIX}/agents/{seg(agent)}/session", m.Session.from_json, json=body)


def list_sessions(agent: str | None, limit: int | None) -> Call[list[m.Session]]:
    params = _drop_none({"agent_id": agent, "limit": limit})
    return Call("GET", f"{PREFIX}/sessions", lambda body: [m.Session.from_json(s) for s in body], params=params)


def get_session(session: str) -> Call[m.Session]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}", m.Session.from_json)


def delete_session(session: str) -> Call[m.DeletedSession]:
    return Call("DELETE", f"{PREFIX}/sessions/{seg(session)}", m.DeletedSession.from_json)


def session_action(session: str, action: str, body: Any = None) -> Call[m.Session]:
    """`restart`, `pause`, `resume`, `hibernate` or `fork`: each answers the session."""
    return Call("POST", f"{PREFIX}/sessions/{seg(session)}/{action}", m.Session.from_json, json=body)


def workspace(session: str) -> Call[m.Workspace]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}/workspace", m.Workspace.from_json)


def vault_keys(session: str) -> Call[list[str]]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}/vault-keys", lambda body: list(body))


def interceptions(session: str, after: int | None, limit: int | None) -> Call[list[m.Interception]]:
    params = _drop_none({"after": after, "limit": limit})
    return Call(
        "GET",
        f"{PREFIX}/sessions/{seg(session)}/interceptions",
        lambda body: [m.Interception.from_json(r) for r in body],
        params=params,
    )


def exec_command(session: str, command: list[str], stdin: bytes | None, cwd: str | None) -> Call[Any]:
    if isinstance(command, str):
        raise TypeError("`command` is a list of words: use [\"sh\", \"-c\", script] for a shell line")
    body: dict[str, Any] = {"command": list(command)}
    if stdin is not None:
        body["stdin"] = base64.b64encode(stdin).decode("ascii")
    if cwd is not None:
        body["cwd"] = cwd
    return Call("POST", f"{PREFIX}/sessions/{seg(session)}/exec", json=body)


def exec_event(line: bytes) -> m.ExecOutput | m.ExecExit | m.ExecError | None:
    """One NDJSON line of the exec response; `None` for a blank line or an unknown kind."""
    if not line.strip():
        return None
    data = json.loads(line)
    if "stdout" in data:
        return m.ExecOutput("stdout", base64.b64decode(data["stdout"]))
    if "stderr" in data:
        return m.ExecOutput("stderr", base64.b64decode(data["stderr"]))
    if "exit_code" in data:
        return m.ExecExit(int(data["exit_code"]))
    if "error" in data:
        return m.ExecError(str(data["error"]))
    return None


# Snapshots.


def create_snapshot(session: str, name: str | None) -> Call[m.Snapshot]:
    body = _drop_none({"name": name})
    return Call("POST", f"{PREFIX}/sessions/{seg(session)}/snapshots", m.Snapshot.from_json, json=body)


def list_snapshots() -> Call[list[m.Snapshot]]:
    return Call("GET", f"{PREFIX}/snapshots", lambda body: [m.Snapshot.from_json(s) for s in body])


def delete_snapshot(name: str) -> Call[m.Snapshot]:
    return Call("DELETE", f"{PREFIX}/snapshots/{seg(name)}", m.Snapshot.from_json)


def session_from_snapshot(name: str, agent: str, title: str | None) -> Call[m.Session]:
    body = _drop_none({"agent": agent, "title": title})
    return Call("POST", f"{PREFIX}/snapshots/{seg(name)}/session", m.Session.from_json, json=body)


# Files.


def list_files(session: str, path: str) -> Call[m.FileList]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}/files", m.FileList.from_json, params={"path": path})


def stat_file(session: str, path: str) -> Call[m.FileEntry]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}/files/stat", m.FileEntry.from_json, params={"path": path})


def delete_file(session: str, path: str, recursive: bool) -> Call[m.Deleted]:
    params = {"path": path, "recursive": "true" if recursive else "false"}
    return Call("DELETE", f"{PREFIX}/sessions/{seg(session)}/files", m.Deleted.from_json, params=params)


def range_header(offset: int | None, length: int | None) -> dict[str, str]:
    """`Range` for `offset`/`length`: from `offset` (to the end, or `length` bytes); a negative
    `offset` alone is the last `-offset` bytes."""
    if offset is None and length is None:
        return {}
    if offset is not None and offset < 0:
        if length is not None:
            raise ValueError("`length` cannot go with a negative `offset` (the file's last bytes)")
        return {"Range": f"bytes={offset}"}
    start = offset or 0
    if length is None:
        return {"Range": f"bytes={start}-"}
    if length <= 0:
        raise ValueError("`length` must be positive")
    return {"Range": f"bytes={start}-{start + length - 1}"}


def read_file(session: str, path: str, offset: int | None, length: int | None, archive: bool) -> Call[Any]:
    params: dict[str, Any] = {"path": path}
    if archive:
        params["archive"] = "true"
    return Call(
        "GET",
        f"{PREFIX}/sessions/{seg(session)}/files/content",
        params=params,
        headers=range_header(offset, length),
    )


def write_file(session: str, path: str, mode: int | str | None, archive: bool) -> Call[m.Uploaded]:
    params: dict[str, Any] = {"path": path}
    if archive:
        params["archive"] = "true"
    if mode is not None:
        params["mode"] = format(mode, "04o") if isinstance(mode, int) else mode
    return Call(
        "PUT",
        f"{PREFIX}/sessions/{seg(session)}/files/content",
        m.Uploaded.from_json,
        params=params,
        headers={"Content-Type": "application/octet-stream"},
    )


# Messages.


def send_message(session: str, text: str) -> Call[m.Message | m.TuiReply]:
    return Call("POST", f"{PREFIX}/sessions/{seg(session)}/message", m.message_or_tui, json={"text": text})


def message_stream(session: str, text: str, fmt: str | None) -> Call[Any]:
    return Call(
        "POST",
        f"{PREFIX}/sessions/{seg(session)}/message_stream",
        params=_drop_none({"format": fmt}),
        json={"text": text},
        headers={"Accept": "text/event-stream"},
    )


def history(session: str) -> Call[list[m.Message]]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}/messages", lambda body: [m.Message.from_json(x) for x in body])


def events(session: str, after: int | None, fmt: str | None) -> Call[Any]:
    return Call(
        "GET",
        f"{PREFIX}/sessions/{seg(session)}/events",
        params=_drop_none({"after": after, "format": fmt}),
        headers={"Accept": "text/event-stream"},
    )


def abort(session: str) -> Call[m.AbortReply]:
    return Call("POST", f"{PREFIX}/sessions/{seg(session)}/abort", m.AbortReply.from_json)


class SseDecoder:
    """Server-sent events, fed line by line: yields the JSON of each event's `data`."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Any | None:
        """One line (without its end); the decoded `data` when it ends an event, else `None`."""
        if line == "":
            if not self._data:
                return None
            text = "\n".join(self._data)
            self._data = []
            return json.loads(text)
        if line.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def frames_of(lines: Iterable[str]) -> Iterable[m.StreamFrame]:
    decoder = SseDecoder()
    for line in lines:
        data = decoder.feed(line)
        if isinstance(data, dict):
            frame = m.stream_frame(data)
            if frame is not None:
                yield frame


# Ports.


def list_ports(session: str) -> Call[m.ListeningPorts]:
    return Call("GET", f"{PREFIX}/sessions/{seg(session)}/ports", m.ListeningPorts.from_json)


def create_preview(session: str, port: int, ttl_seconds: int | None) -> Call[m.PreviewUrl]:
    body = _drop_none({"port": port, "ttl_seconds": ttl_seconds})
    return Call("POST", f"{PREFIX}/sessions/{seg(session)}/preview_urls", m.PreviewUrl.from_json, json=body)


def revoke_previews(session: str, port: int | None) -> Call[m.RevokedPreviewUrls]:
    return Call(
        "DELETE",
        f"{PREFIX}/sessions/{seg(session)}/preview_urls",
        m.RevokedPreviewUrls.from_json,
        params=_drop_none({"port": port}),
    )


def port_path(session: str, port: int, path: str) -> str:
    return f"{PREFIX}/sessions/{seg(session)}/ports/{int(port)}/{path.lstrip('/')}"


def health() -> Call[m.Health]:
    return Call("GET", "/api/v1/health", m.Health.from_json)
