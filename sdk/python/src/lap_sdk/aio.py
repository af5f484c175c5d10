"""The asynchronous client: `AsyncClient` (asyncio), the same surface as `Client` (client.py),
each method awaited and each stream an async iterator.

Every call either answers the typed value or raises a `LapError` carrying the API's message,
status and hint. Every wait has a deadline: plain calls `timeout` (30 s by default), waits and
streams their own, named where they are taken. An async stream left before its end is closed (and
an exec's command killed) when the iterator is; wrap it in `contextlib.aclosing` to make that
immediate.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import IO, Any, TypeVar

import httpx

from . import _calls as c
from . import models as m
from .client import (
    CHUNK,
    EXEC_TIMEOUT,
    FOLLOW_INTERVAL,
    MESSAGE_TIMEOUT,
    READY_POLL,
    READY_TIMEOUT,
    SSE_IDLE_TIMEOUT,
    _check,
    _transport_error,
    _verify,
)
from .config import Settings, resolve
from .errors import LapError, LapTimeoutError, SessionFailedError

T = TypeVar("T")

__all__ = ["AsyncClient"]


class AsyncClient:
    """A client of `lap serve`. Settings come from the arguments, else `LAP_URL` and
    `LAP_MASTER_KEY`, else the `lap` CLI's config file (see `lap_sdk.config`)."""

    def __init__(
        self,
        url: str | None = None,
        master_key: str | None = None,
        *,
        timeout: float = 30.0,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or resolve(url, master_key)
        headers = {"User-Agent": "lap-sdk-python/0.1.0"}
        if self.settings.master_key:
            headers["Authorization"] = f"Bearer {self.settings.master_key}"
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.settings.url, headers=headers, timeout=timeout, verify=_verify(self.settings)
        )
        self.agents = Agents(self)
        self.sessions = Sessions(self)
        self.files = Files(self)
        self.messages = Messages(self)
        self.ports = Ports(self)
        self.snapshots = Snapshots(self)

    @property
    def url(self) -> str:
        return self.settings.url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> m.Health:
        """`GET /api/v1/health` (needs no key)."""
        return await self._call(c.health())

    async def _call(self, call: c.Call[T], *, content: Any = None, timeout: float | None = None) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json if content is None else None,
                content=content,
                headers=call.headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.HTTPError as err:
            raise _transport_error(err, self.url) from err
        _check(response, response.content)
        if response.status_code == 204 or not response.content:
            return call.parse(None)
        if response.headers.get("content-type", "").startswith("application/json"):
            return call.parse(response.json())
        return call.parse(response.content)

    @contextlib.asynccontextmanager
    async def _stream(self, call: c.Call[Any], *, read_timeout: float | None, content: Any = None) -> AsyncIterator[httpx.Response]:
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        try:
            async with self._http.stream(
                call.method,
                call.path,
                params=call.params,
                json=call.json if content is None else None,
                content=content,
                headers=call.headers,
                timeout=timeout,
            ) as response:
                if not response.is_success:
                    _check(response, await response.aread())
                yield response
        except httpx.HTTPError as err:
            raise _transport_error(err, self.url) from err


class Agents:
    """`/agents`: what a session runs (harness, repo, credentials, egress policy)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, *, limit: int | None = None, offset: int | None = None, search: str | None = None) -> m.AgentList:
        return await self._c._call(c.list_agents(limit, offset, search))

    async def create(
        self,
        name: str,
        *,
        harness_id: str | None = None,
        command: str | None = None,
        repo_url: str | None = None,
        branch: str | None = None,
        prompt: str | None = None,
        model: str | None = None,
        env: dict[str, str] | None = None,
        credentials: builtins.list[m.CredentialInput] | None = None,
        env_vars: dict[str, str] | None = None,
        env_var_hosts: dict[str, builtins.list[str]] | None = None,
        env_var_inject: dict[str, builtins.list[str]] | None = None,
        env_var_rules: dict[str, builtins.list[str]] | None = None,
        allow_out: builtins.list[str] | None = None,
        deny_out: builtins.list[str] | None = None,
        limits: m.AgentLimits | None = None,
        volumes: builtins.list[m.AgentVolume] | None = None,
    ) -> m.Agent:
        """Creates an agent (`harness_id` defaults to `opencode` on the server, as in LAP)."""
        fields = dict(locals())
        del fields["self"]
        return await self._c._call(c.create_agent(fields))

    async def get(self, agent: str) -> m.Agent:
        """An agent by UUID or name."""
        return await self._c._call(c.get_agent(agent))

    async def update(
        self,
        agent: str,
        *,
        name: str | None = None,
        harness_id: str | None = None,
        command: str | None = None,
        repo_url: str | None = None,
        branch: str | None = None,
        prompt: str | None = None,
        model: str | None = None,
        env: dict[str, str] | None = None,
        credentials: builtins.list[m.CredentialInput] | None = None,
        env_vars: dict[str, str] | None = None,
        env_var_hosts: dict[str, builtins.list[str]] | None = None,
        env_var_inject: dict[str, builtins.list[str]] | None = None,
        env_var_rules: dict[str, builtins.list[str]] | None = None,
        remove_credentials: builtins.list[str] | None = None,
        allow_out: builtins.list[str] | None = None,
        deny_out: builtins.list[str] | None = None,
        limits: m.AgentLimits | None = None,
        volumes: builtins.list[m.AgentVolume] | None = None,
    ) -> m.Agent:
        """Changes an agent; a field left `None` stays as it is (`""` clears a text field)."""
        fields = dict(locals())
        del fields["self"], fields["agent"]
        return await self._c._call(c.update_agent(agent, fields))

    async def delete(self, agent: str) -> None:
        await self._c._call(c.delete_agent(agent))


class Sessions:
    """`/sessions`: running (or resting) sandboxes of an agent."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, agent: str, *, title: str | None = None) -> m.Session:
        """Starts a session of `agent` (UUID or name); it is `creating`: see `wait_ready`."""
        return await self._c._call(c.create_session(agent, title))

    async def get(self, session: str) -> m.Session:
        return await self._c._call(c.get_session(session))

    async def list(self, *, agent: str | None = None, limit: int | None = None) -> builtins.list[m.Session]:
        """Sessions, newest first; only `agent`'s when given (UUID or name)."""
        return await self._c._call(c.list_sessions(agent, limit))

    async def delete(self, session: str) -> m.DeletedSession:
        """Stops a session: its sandbox is deleted and it becomes `dead`."""
        return await self._c._call(c.delete_session(session))

    async def wait_ready(self, session: str, *, timeout: float = READY_TIMEOUT, interval: float = READY_POLL) -> m.Session:
        """Polls until the session is `ready`. Raises `SessionFailedError` when it ends `failed` or
        `dead`, `LapTimeoutError` when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            shown = await self.get(session)
            if shown.status == m.SessionStatus.READY:
                return shown
            if shown.status in (m.SessionStatus.FAILED, m.SessionStatus.DEAD):
                raise SessionFailedError(
                    f"session {session} is {shown.status}: {shown.failure_reason or 'no reason given'}",
                    session=shown,
                    hint="`lap sessions show` and the server's log say more; `restart` gives it a fresh sandbox",
                )
            if time.monotonic() >= deadline:
                raise LapTimeoutError(
                    f"session {session} is still {shown.status} after {timeout:g}s",
                    hint="raise `timeout`, or see what it waits for in `phase` (`lap sessions show`)",
                )
            await asyncio.sleep(interval)

    async def restart(self, session: str) -> m.Session:
        """A fresh sandbox for a `ready`, `dead` or `failed` session; answers once it settled."""
        return await self._c._call(c.session_action(session, "restart"), timeout=max(self._c.timeout, 90.0))

    async def pause(self, session: str) -> m.Session:
        """Freezes the session's processes (memory kept); an exec, message or attach resumes it."""
        return await self._c._call(c.session_action(session, "pause"))

    async def resume(self, session: str) -> m.Session:
        """Brings a `paused` or `hibernated` session back to `ready`."""
        return await self._c._call(c.session_action(session, "resume"), timeout=max(self._c.timeout, 90.0))

    async def hibernate(self, session: str) -> m.Session:
        """Stops the sandbox and keeps only the workspace."""
        return await self._c._call(c.session_action(session, "hibernate"))

    async def fork(self, session: str, *, title: str | None = None) -> m.Session:
        """A new session of the same agent on a copy of this one's workspace (`creating`)."""
        body = {"title": title} if title is not None else {}
        return await self._c._call(c.session_action(session, "fork", body), timeout=max(self._c.timeout, 90.0))

    async def workspace(self, session: str) -> m.Workspace:
        return await self._c._call(c.workspace(session))

    async def vault_keys(self, session: str) -> builtins.list[str]:
        """Names of the credentials the sandbox holds stubs for."""
        return await self._c._call(c.vault_keys(session))

    async def egress(self, session: str, *, after: int | None = None, limit: int | None = None) -> builtins.list[m.Interception]:
        """The vault's log of the session's requests, oldest first (after record `after`)."""
        return await self._c._call(c.interceptions(session, after, limit))

    async def follow_egress(
        self, session: str, *, after: int = 0, interval: float = FOLLOW_INTERVAL, timeout: float | None = None
    ) -> AsyncIterator[m.Interception]:
        """The egress log as it grows: yields every record, asking again every `interval`
        seconds, until the session has ended and nothing is left, or `timeout` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            records = await self.egress(session, after=after)
            for record in records:
                yield record
            if records:
                after = records[-1].id
            elif (await self.get(session)).status.is_terminal:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            await asyncio.sleep(interval)

    async def exec_stream(
        self,
        session: str,
        command: builtins.list[str],
        *,
        stdin: bytes | None = None,
        cwd: str | None = None,
        timeout: float | None = EXEC_TIMEOUT,
    ) -> AsyncIterator[m.ExecOutput | m.ExecExit | m.ExecError]:
        """Runs `command` in the sandbox; yields its output as the API streams it, then its
        `ExecExit` (or `ExecError`). Stopping early (closing the iterator) kills the command.
        `timeout` is the longest silence allowed (`None`: none)."""
        async with self._c._stream(c.exec_command(session, command, stdin, cwd), read_timeout=timeout) as response:
            async for line in response.aiter_lines():
                event = c.exec_event(line.encode())
                if event is not None:
                    yield event

    async def exec(
        self,
        session: str,
        command: builtins.list[str],
        *,
        stdin: bytes | None = None,
        cwd: str | None = None,
        timeout: float | None = EXEC_TIMEOUT,
    ) -> m.ExecResult:
        """Runs `command` to its end: its stdout, stderr and exit code. Raises `LapError` when
        it could not run."""
        out, err = bytearray(), bytearray()
        async for event in self.exec_stream(session, command, stdin=stdin, cwd=cwd, timeout=timeout):
            if isinstance(event, m.ExecOutput):
                (out if event.stream == "stdout" else err).extend(event.data)
            elif isinstance(event, m.ExecExit):
                return m.ExecResult(event.exit_code, bytes(out), bytes(err))
            else:
                raise LapError(f"exec in session {session} failed: {event.message}")
        raise LapError(
            f"the exec stream of session {session} ended without an exit code",
            hint="the server or the sandbox went away mid-way; `lap sessions show` says which",
        )


class Snapshots:
    """Named copies of a session's workspace."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, session: str, *, name: str | None = None) -> m.Snapshot:
        return await self._c._call(c.create_snapshot(session, name), timeout=max(self._c.timeout, 300.0))

    async def list(self) -> builtins.list[m.Snapshot]:
        return await self._c._call(c.list_snapshots())

    async def delete(self, name: str) -> m.Snapshot:
        return await self._c._call(c.delete_snapshot(name))

    async def start_session(self, name: str, agent: str, *, title: str | None = None) -> m.Session:
        """A new session of `agent` on a copy of the snapshot (`creating`)."""
        return await self._c._call(c.session_from_snapshot(name, agent, title), timeout=max(self._c.timeout, 300.0))


class Files:
    """Files in a ready session's sandbox: paths absolute under `/work` or `/tmp`, or relative to
    the sandbox user's home (`/work/home`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, session: str, path: str) -> m.FileList:
        return await self._c._call(c.list_files(session, path))

    async def stat(self, session: str, path: str) -> m.FileEntry:
        return await self._c._call(c.stat_file(session, path))

    async def read(
        self, session: str, path: str, *, offset: int | None = None, length: int | None = None, archive: bool = False
    ) -> bytes:
        """The file's bytes (from `offset`, `length` of them: a `Range` request; a negative
        `offset` alone: the last bytes). `archive=True` reads a directory as a tar stream."""
        out = bytearray()
        async for chunk in self.iter_read(session, path, offset=offset, length=length, archive=archive):
            out.extend(chunk)
        return bytes(out)

    async def read_text(self, session: str, path: str, *, encoding: str = "utf-8") -> str:
        return (await self.read(session, path)).decode(encoding)

    async def iter_read(
        self, session: str, path: str, *, offset: int | None = None, length: int | None = None, archive: bool = False
    ) -> AsyncIterator[bytes]:
        """`read`, streamed in chunks (constant memory whatever the size)."""
        async with self._c._stream(c.read_file(session, path, offset, length, archive), read_timeout=self._c.timeout) as resp:
            async for chunk in resp.aiter_bytes(CHUNK):
                yield chunk

    async def download(self, session: str, path: str, dest: IO[bytes], *, archive: bool = False) -> int:
        """Streams the file (or, with `archive`, a directory's tar) into `dest`; returns the bytes."""
        total = 0
        async for chunk in self.iter_read(session, path, archive=archive):
            dest.write(chunk)
            total += len(chunk)
        return total

    async def write(
        self,
        session: str,
        path: str,
        data: bytes | str | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes],
        *,
        mode: int | str | None = None,
        archive: bool = False,
    ) -> m.Uploaded:
        """Writes `data` (bytes, text as UTF-8, a binary file or chunks, streamed) to `path`;
        `mode` as `0o644` or `"0644"`. `archive=True` unpacks a tar stream into the directory."""
        content: Any = data.encode() if isinstance(data, str) else data
        if hasattr(content, "read"):
            stream = content
            content = iter(lambda: stream.read(CHUNK), b"")
        if not isinstance(content, bytes) and not hasattr(content, "__aiter__"):
            content = _aiter(content)
        return await self._c._call(c.write_file(session, path, mode, archive), content=content, timeout=max(self._c.timeout, 300.0))

    async def delete(self, session: str, path: str, *, recursive: bool = False) -> m.Deleted:
        return await self._c._call(c.delete_file(session, path, recursive))


class Messages:
    """Messages to API harnesses (claude-agent-sdk, codex-app-server, opencode); a terminal
    harness answers `TuiReply` (connect to its terminal instead)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def send(self, session: str, text: str, *, timeout: float = MESSAGE_TIMEOUT) -> m.Message | m.TuiReply:
        """Sends `text` and waits for the reply."""
        return await self._c._call(c.send_message(session, text), timeout=timeout)

    async def stream(
        self, session: str, text: str, *, format: str | None = None, idle_timeout: float = SSE_IDLE_TIMEOUT
    ) -> AsyncIterator[m.StreamFrame]:
        """Sends `text` and yields the turn as typed frames: `ReadyFrame`, `HarnessEventFrame`s,
        then `DoneFrame` (with the reply) or `ErrorFrame`, where it ends."""
        async with self._c._stream(c.message_stream(session, text, format), read_timeout=idle_timeout) as response:
            async for frame in _frames(response):
                yield frame
                if isinstance(frame, (m.DoneFrame, m.ErrorFrame)):
                    return

    async def history(self, session: str) -> builtins.list[m.Message]:
        return await self._c._call(c.history(session))

    async def events(
        self, session: str, *, after: int | None = None, format: str | None = None, idle_timeout: float = SSE_IDLE_TIMEOUT
    ) -> AsyncIterator[m.StreamFrame]:
        """The session's event log as it happens (those after seq `after` first); it does not
        end by itself: stop iterating when you have what you need."""
        async with self._c._stream(c.events(session, after, format), read_timeout=idle_timeout) as response:
            async for frame in _frames(response):
                yield frame

    async def abort(self, session: str) -> m.AbortReply:
        return await self._c._call(c.abort(session))


class Ports:
    """What the sandbox listens on, and ways in: the proxy path and signed preview URLs."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, session: str) -> m.ListeningPorts:
        return await self._c._call(c.list_ports(session))

    async def preview_url(self, session: str, port: int, *, ttl_seconds: int | None = None) -> m.PreviewUrl:
        """A signed, expiring URL that opens the port in a browser without the master key."""
        return await self._c._call(c.create_preview(session, port, ttl_seconds))

    async def revoke_previews(self, session: str, *, port: int | None = None) -> m.RevokedPreviewUrls:
        return await self._c._call(c.revoke_previews(session, port))

    def url(self, session: str, port: int, path: str = "") -> str:
        """The proxy URL of `path` on the sandbox's `127.0.0.1:port` (takes the master key)."""
        return self._c.url + c.port_path(session, port, path)

    async def request(self, session: str, port: int, method: str = "GET", path: str = "", **kwargs: Any) -> httpx.Response:
        """An HTTP request to the sandbox's server through the proxy path; the answer as it is
        (any status: it is the sandbox's)."""
        try:
            return await self._c._http.request(method, c.port_path(session, port, path), **kwargs)
        except httpx.HTTPError as err:
            raise _transport_error(err, self._c.url) from err


async def _frames(response: httpx.Response) -> AsyncIterator[m.StreamFrame]:
    decoder = c.SseDecoder()
    async for line in response.aiter_lines():
        data = decoder.feed(line)
        if isinstance(data, dict):
            frame = m.stream_frame(data)
            if frame is not None:
                yield frame


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
