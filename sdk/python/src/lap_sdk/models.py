"""The shapes of lap's REST API, as dataclasses written by hand from `GET /api/v1/openapi.json`.

Each dataclass names the OpenAPI schema it mirrors in `SCHEMA`; a field whose JSON name is not a
Python name says so in its metadata (`json=`). `tests/test_openapi.py` checks every covered schema
and field against a live server's document, so drift fails a test instead of a user's program.
Unknown fields in a response are ignored (a newer server may add some); missing optional ones are
`None` or empty.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

__all__ = [
    "AbortReply",
    "Agent",
    "AgentLimits",
    "AgentList",
    "CredentialInfo",
    "CredentialInput",
    "Deleted",
    "DeletedSession",
    "DoneFrame",
    "ErrorFrame",
    "Event",
    "ExecError",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "FileEntry",
    "FileKind",
    "FileList",
    "HarnessEventFrame",
    "Health",
    "Interception",
    "ListeningPort",
    "ListeningPorts",
    "Message",
    "MessageInfo",
    "MessageTime",
    "Part",
    "PreviewUrl",
    "ReadyFrame",
    "RevokedPreviewUrls",
    "Session",
    "SessionStatus",
    "Snapshot",
    "StreamFrame",
    "Tokens",
    "TuiReply",
    "Uploaded",
    "Workspace",
]


def _json_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("json", f.name))


def _convert(tp: Any, value: Any) -> Any:
    """Turns decoded JSON into the annotated type: dataclasses, enums, lists and dicts of them."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value) if len(args) == 1 else value
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(tp)
        return {k: _convert(item, v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            return value  # a value this SDK does not know yet: kept as the string
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp.from_json(value)  # type: ignore[attr-defined]
    return value


class _Model:
    """`from_json` for the dataclasses below."""

    SCHEMA: ClassVar[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = _json_name(f)
            if name in data:
                kwargs[f.name] = _convert(hints[f.name], data[name])
        return cls(**kwargs)


class SessionStatus(enum.StrEnum):
    """`SessionStatus`: `creating → ready → dead`, or `creating → failed`; `paused` and `hibernated`
    come back to `ready` on a resume."""

    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"
    DEAD = "dead"
    PAUSED = "paused"
    HIBERNATED = "hibernated"

    @property
    def is_terminal(self) -> bool:
        """`failed` and `dead` never change again (until a restart)."""
        return self in (SessionStatus.FAILED, SessionStatus.DEAD)


class FileKind(enum.StrEnum):
    """`FileKind`: what a directory entry is (a symlink is reported as itself)."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"


# The OpenAPI schema of each enum (an Enum's class attributes would be members).
ENUM_SCHEMAS: dict[type[enum.Enum], str] = {SessionStatus: "SessionStatus", FileKind: "FileKind"}


@dataclass
class Health(_Model):
    SCHEMA: ClassVar[str] = "Health"
    ok: bool
    version: str
    backend: str


@dataclass
class AgentLimits(_Model):
    """Resource limits of an agent's sandboxes; `None` takes the server's default."""

    SCHEMA: ClassVar[str] = "AgentLimits"
    memory_mb: int | None = None
    pids: int | None = None
    cpus: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class CredentialInfo(_Model):
    """A credential as the API shows it: never the value."""

    SCHEMA: ClassVar[str] = "CredentialInfo"
    name: str
    hosts: list[str]
    fingerprint: str
    inject: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


@dataclass
class CredentialInput(_Model):
    """A credential as a client sends it; the value is write-only."""

    SCHEMA: ClassVar[str] = "CredentialInput"
    name: str
    value: str
    hosts: list[str] = field(default_factory=list)
    inject: list[str] | None = None
    rules: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class AgentVolume(_Model):
    """A directory of an agent that every session of it mounts at `path` (under `/work`); `size_bytes`
    only comes back from `GET /agents/{id}` and is ignored in a request."""

    SCHEMA: ClassVar[str] = "AgentVolume"
    name: str
    path: str
    size_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path}


@dataclass
class Agent(_Model):
    SCHEMA: ClassVar[str] = "Agent"
    id: str
    name: str
    harness_id: str
    supports_tui: bool
    branch: str
    created_at: str
    updated_at: str
    command: str | None = None
    repo_url: str | None = None
    prompt: str | None = None
    model: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    credentials: list[CredentialInfo] = field(default_factory=list)
    env_var_hosts: dict[str, list[str]] = field(default_factory=dict)
    allow_out: list[str] = field(default_factory=list)
    deny_out: list[str] = field(default_factory=list)
    limits: AgentLimits | None = None
    volumes: list[AgentVolume] = field(default_factory=list)
    session_count: int | None = None
    has_active_session: bool | None = None
    owner: str | None = None


@dataclass
class AgentList(_Model):
    SCHEMA: ClassVar[str] = "AgentList"
    data: list[Agent]
    total: int
    limit: int
    offset: int


@dataclass
class Session(_Model):
    SCHEMA: ClassVar[str] = "Session"
    id: str
    agent_id: str
    agent_name: str
    status: SessionStatus
    supports_tui: bool
    created_at: str
    last_seen_at: str
    phase: str | None = None
    phase_detail: str | None = None
    sandbox_url: str | None = None
    tty_url: str | None = None
    tty_token: str | None = None
    harness_session_id: str | None = None
    failure_reason: str | None = None
    title_preview: str | None = None
    idle_timeout_ms: int | None = None
    stopped_at: str | None = None
    owner: str | None = None


@dataclass
class DeletedSession(_Model):
    SCHEMA: ClassVar[str] = "DeletedSession"
    id: str
    status: str


@dataclass
class Workspace(_Model):
    SCHEMA: ClassVar[str] = "Workspace"
    session_id: str
    path: str
    size_bytes: int
    exists: bool


@dataclass
class Snapshot(_Model):
    SCHEMA: ClassVar[str] = "Snapshot"
    id: str
    name: str
    session_id: str
    agent_name: str
    path: str
    size_bytes: int
    created_at: str
    owner: str | None = None


@dataclass
class Interception(_Model):
    """One request that went through a session's vault (never a real credential value)."""

    SCHEMA: ClassVar[str] = "Interception"
    timestamp: str
    method: str
    host: str
    port: int
    path: str
    alert: bool
    id: int = 0
    status: int | None = None
    swapped: list[str] = field(default_factory=list)
    stubs_swapped: list[str] = field(default_factory=list)
    scrubbed: list[str] = field(default_factory=list)
    bytes_up: int | None = None
    bytes_down: int | None = None
    duration_ms: int | None = None
    blocked: str | None = None
    block_kind: str | None = None


# Exec: the response is NDJSON, one `ExecEvent` per line.


@dataclass
class ExecOutput:
    """A chunk of the command's output, as it wrote it. `stream` is `stdout` or `stderr`."""

    stream: str
    data: bytes


@dataclass
class ExecExit:
    """The command ended: its exit code (128 + the signal number when it was killed)."""

    exit_code: int


@dataclass
class ExecError:
    """The command could not run, or the sandbox failed mid-way."""

    message: str


# The four variants of `ExecEvent`, by the key each one has.
EXEC_EVENT_KEYS = ("stdout", "stderr", "exit_code", "error")


@dataclass
class ExecResult:
    """All of a command's output and its exit code."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


@dataclass
class FileEntry(_Model):
    SCHEMA: ClassVar[str] = "FileEntry"
    name: str
    path: str
    kind: FileKind = field(metadata={"json": "type"})
    size: int
    mode: str
    modified: str
    target: str | None = None


@dataclass
class FileList(_Model):
    SCHEMA: ClassVar[str] = "FileList"
    path: str
    entry: FileEntry
    entries: list[FileEntry]
    truncated: int = 0


@dataclass
class Uploaded(_Model):
    SCHEMA: ClassVar[str] = "Uploaded"
    path: str
    bytes: int
    entries: int


@dataclass
class Deleted(_Model):
    SCHEMA: ClassVar[str] = "Deleted"
    path: str
    entries: int


@dataclass
class ListeningPort(_Model):
    SCHEMA: ClassVar[str] = "ListeningPort"
    port: int
    address: str


@dataclass
class ListeningPorts(_Model):
    SCHEMA: ClassVar[str] = "ListeningPorts"
    ports: list[ListeningPort]


@dataclass
class PreviewUrl(_Model):
    SCHEMA: ClassVar[str] = "PreviewUrl"
    url: str
    session_id: str
    port: int
    expires_at: str


@dataclass
class RevokedPreviewUrls(_Model):
    SCHEMA: ClassVar[str] = "RevokedPreviewUrls"
    session_id: str
    revoked_before: str
    port: int | None = None


# Messages.


@dataclass
class MessageTime(_Model):
    """Milliseconds since the Unix epoch."""

    SCHEMA: ClassVar[str] = "MessageTime"
    created: int
    completed: int | None = None


@dataclass
class Tokens(_Model):
    SCHEMA: ClassVar[str] = "Tokens"
    input: int
    output: int
    reasoning: int = 0
    cache: dict[str, int] = field(default_factory=dict)


@dataclass
class MessageInfo(_Model):
    SCHEMA: ClassVar[str] = "MessageInfo"
    id: str
    session_id: str = field(metadata={"json": "sessionID"})
    role: str
    time: MessageTime
    harness: str | None = None
    model_id: str | None = field(default=None, metadata={"json": "modelID"})
    tokens: Tokens | None = None
    cost: float | None = None
    finish: str | None = None
    error: dict[str, Any] | None = None


@dataclass
class Part:
    """`Part`: `type` is `text`, `reasoning` or `tool`; `text` for the first two, `tool`,
    `call_id` and `state` (status, input, output, error) for a tool call."""

    SCHEMA: ClassVar[str] = "Part"
    type: str
    id: str
    text: str | None = None
    tool: str | None = None
    call_id: str | None = None
    state: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        return cls(
            type=data["type"],
            id=data["id"],
            text=data.get("text"),
            tool=data.get("tool"),
            call_id=data.get("callID"),
            state=data.get("state"),
        )


@dataclass
class Message(_Model):
    """A message of the conversation: the user's turn or the agent's reply (opencode's shape)."""

    SCHEMA: ClassVar[str] = "Message"
    info: MessageInfo
    parts: list[Part]

    @property
    def text(self) -> str:
        """The text parts, joined."""
        return "".join(p.text or "" for p in self.parts if p.type == "text")


@dataclass
class TuiReply(_Model):
    """What a terminal (TUI) session answers to a message: connect to its terminal instead."""

    SCHEMA: ClassVar[str] = "TuiReply"
    text: str


@dataclass
class AbortReply(_Model):
    SCHEMA: ClassVar[str] = "AbortReply"
    ok: bool
    aborted: bool


@dataclass
class Event:
    """`Event`: one event of a session's conversation. `type` is `session.started`,
    `turn.started`, `item.started`, `item.delta`, `item.completed`, `turn.status`,
    `turn.completed` or `session.ended`; `data` carries its fields."""

    SCHEMA: ClassVar[str] = "Event"
    seq: int
    time: str
    session_id: str
    type: str
    data: dict[str, Any]
    turn_id: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            seq=data["seq"],
            time=data["time"],
            session_id=data["session_id"],
            type=data["type"],
            data=data.get("data") or {},
            turn_id=data.get("turn_id"),
        )


# `StreamFrame`: one SSE `data:` line of `message_stream` and `events`.


@dataclass
class ReadyFrame:
    """The stream is open (for a message: it was handed to the agent)."""


@dataclass
class HarnessEventFrame:
    """An event of the turn. With `format="opencode"` the event is an opencode bus event (a dict)."""

    event: Event | dict[str, Any]


@dataclass
class DoneFrame:
    """The turn is over; `message` is the reply as the history keeps it."""

    message: Message | None


@dataclass
class ErrorFrame:
    message: str


StreamFrame = ReadyFrame | HarnessEventFrame | DoneFrame | ErrorFrame

# `StreamFrame`'s `type` values, by the class that stands for each.
STREAM_FRAME_TYPES = {
    "ready": ReadyFrame,
    "harness_event": HarnessEventFrame,
    "done": DoneFrame,
    "error": ErrorFrame,
}


def stream_frame(data: dict[str, Any]) -> StreamFrame | None:
    """A `StreamFrame` from its JSON; `None` for a type this SDK does not know."""
    kind = data.get("type")
    if kind == "ready":
        return ReadyFrame()
    if kind == "harness_event":
        event = data.get("event") or {}
        typed = "seq" in event and "session_id" in event
        return HarnessEventFrame(Event.from_json(event) if typed else event)
    if kind == "done":
        message = data.get("message")
        return DoneFrame(Message.from_json(message) if message else None)
    if kind == "error":
        return ErrorFrame(str(data.get("message", "")))
    return None


def message_or_tui(data: dict[str, Any]) -> Message | TuiReply:
    """`POST /message` answers a `Message`, or `{"text": …}` for a terminal session."""
    if "info" in data:
        return Message.from_json(data)
    return TuiReply.from_json(data)
