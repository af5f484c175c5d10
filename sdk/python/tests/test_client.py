"""The sync client against a real `lap serve` with real sandboxes."""

from __future__ import annotations

import os
import socket
import time

import pytest

from conftest import BLOCKED_HOST, ready_session
from lap_sdk import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    DoneFrame,
    ErrorFrame,
    ExecExit,
    ExecOutput,
    FileKind,
    LapConnectionError,
    LapError,
    NotFoundError,
    ReadyFrame,
    SessionFailedError,
    SessionStatus,
    TuiReply,
)

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def test_a_new_session_becomes_ready(lap: Client, session) -> None:
    shown = lap.sessions.get(session.id)
    assert shown.status is SessionStatus.READY
    assert shown.agent_name and shown.id == session.id


def test_exec_returns_stdout_stderr_and_the_exit_code(lap: Client, session) -> None:
    result = lap.sessions.exec(session.id, ["echo", "hello from the sandbox"])
    assert (result.exit_code, result.stdout_text, result.stderr) == (0, "hello from the sandbox\n", b"")
    result = lap.sessions.exec(session.id, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")


def test_exec_takes_stdin_and_a_working_directory(lap: Client, session) -> None:
    result = lap.sessions.exec(session.id, ["sh", "-c", "pwd; cat"], stdin=b"\x00piped\xff", cwd="/tmp")
    assert result.exit_code == 0
    assert result.stdout == b"/tmp\n\x00piped\xff"


def test_exec_streams_output_in_order_then_the_exit(lap: Client, session) -> None:
    events = list(lap.sessions.exec_stream(session.id, ["sh", "-c", "for i in 1 2 3; do echo $i; done"]))
    assert isinstance(events[-1], ExecExit) and events[-1].exit_code == 0
    output = b"".join(e.data for e in events if isinstance(e, ExecOutput) and e.stream == "stdout")
    assert output == b"1\n2\n3\n"


def test_a_file_written_is_read_back_whole_and_by_range(lap: Client, session) -> None:
    uploaded = lap.files.write(session.id, "notes.txt", "0123456789", mode=0o600)
    assert (uploaded.bytes, uploaded.entries) == (10, 1)
    assert lap.files.read(session.id, "notes.txt") == b"0123456789"
    assert lap.files.read(session.id, "/work/home/notes.txt", offset=2, length=3) == b"234"
    assert lap.files.read(session.id, "notes.txt", offset=7) == b"789"
    assert lap.files.read(session.id, "notes.txt", offset=-2) == b"89"
    entry = lap.files.stat(session.id, "notes.txt")
    assert (entry.kind, entry.size, entry.mode, entry.path) == (FileKind.FILE, 10, "0600", "/work/home/notes.txt")
    # The sandbox sees what the API wrote.
    assert lap.sessions.exec(session.id, ["cat", "notes.txt"]).stdout == b"0123456789"


def test_files_are_listed_streamed_and_deleted(lap: Client, session, tmp_path) -> None:
    lap.sessions.exec(session.id, ["mkdir", "-p", "tree/sub"])
    big = os.urandom(300_000)
    lap.files.write(session.id, "tree/sub/big.bin", iter([big[:100_000], big[100_000:]]))
    listing = lap.files.list(session.id, "tree")
    assert listing.entry.kind is FileKind.DIRECTORY
    assert [(e.name, e.kind) for e in listing.entries] == [("sub", FileKind.DIRECTORY)]
    with open(tmp_path / "big.bin", "wb") as dest:
        assert lap.files.download(session.id, "tree/sub/big.bin", dest) == len(big)
    assert (tmp_path / "big.bin").read_bytes() == big
    with pytest.raises(ConflictError) as refused:
        lap.files.delete(session.id, "tree")
    assert refused.value.status == 409 and "recursive" in refused.value.hint
    assert lap.files.delete(session.id, "tree", recursive=True).entries == 3
    with pytest.raises(NotFoundError):
        lap.files.stat(session.id, "tree")


def test_a_path_outside_the_sandbox_roots_is_refused_with_a_hint(lap: Client, session) -> None:
    with pytest.raises(LapError) as refused:
        lap.files.read(session.id, "/etc/passwd")
    assert refused.value.status == 403
    assert "/work and /tmp" in refused.value.hint


def test_the_session_list_holds_the_session(lap: Client, agent, session) -> None:
    assert session.id in [s.id for s in lap.sessions.list()]
    mine = lap.sessions.list(agent=agent)
    assert session.id in [s.id for s in mine]
    assert {s.agent_name for s in mine} == {agent}


def test_a_blocked_request_shows_in_the_egress_log(lap: Client, session) -> None:
    result = lap.sessions.exec(session.id, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{BLOCKED_HOST}/x?token=abc"])
    assert result.stdout_text == "403"
    records = [r for r in lap.sessions.egress(session.id) if r.host == BLOCKED_HOST]
    assert records, lap.sessions.egress(session.id)
    record = records[-1]
    assert (record.method, record.status, record.block_kind) == ("GET", 403, "egress-policy")
    assert "abc" not in record.path  # query values are redacted
    followed = next(iter(lap.sessions.follow_egress(session.id, after=record.id - 1, timeout=30)))
    assert followed == record
    assert lap.sessions.egress(session.id, after=record.id) == []


def test_an_unknown_session_raises_with_the_apis_message_status_and_hint(lap: Client) -> None:
    with pytest.raises(NotFoundError) as err:
        lap.sessions.get(UNKNOWN)
    assert err.value.status == 404 == err.value.code
    assert UNKNOWN in err.value.message
    assert "lap sessions list" in err.value.hint
    assert "hint: " in str(err.value)


def test_a_bad_request_and_a_wrong_key_raise_their_own_errors(lap: Client, session) -> None:
    with pytest.raises(BadRequestError) as err:
        lap.sessions.exec(session.id, [])
    assert "`command` is empty" in err.value.message and err.value.hint
    with Client(lap.url, "lapk_wrong") as wrong, pytest.raises(AuthenticationError) as err:
        wrong.sessions.list()
    assert err.value.status == 401 and err.value.hint


def test_a_terminal_session_answers_messages_as_lap_does(lap: Client, session) -> None:
    reply = lap.messages.send(session.id, "hello")
    assert isinstance(reply, TuiReply) and "TUI" in reply.text
    frames = list(lap.messages.stream(session.id, "hello"))
    assert isinstance(frames[0], ReadyFrame)
    assert isinstance(frames[-1], ErrorFrame) and "TUI" in frames[-1].message
    assert not any(isinstance(f, DoneFrame) for f in frames)
    assert lap.messages.history(session.id) == []


def test_agents_are_created_listed_updated_and_deleted(lap: Client) -> None:
    agent = lap.agents.create("sdk-crud", harness_id="shell", env={"A": "1"}, allow_out=["*.pypi.org"])
    assert (agent.harness_id, agent.env, agent.allow_out) == ("shell", {"A": "1"}, ["*.pypi.org"])
    assert "sdk-crud" in [a.name for a in lap.agents.list(search="sdk-crud").data]
    updated = lap.agents.update("sdk-crud", prompt="be brief", allow_out=[])
    assert (updated.prompt, updated.allow_out, updated.id) == ("be brief", [], agent.id)
    assert lap.agents.get(agent.id).prompt == "be brief"
    lap.agents.delete("sdk-crud")
    with pytest.raises(NotFoundError):
        lap.agents.get("sdk-crud")


def test_a_port_is_listed_proxied_and_previewed(lap: Client, session) -> None:
    lap.files.write(session.id, "index.html", "<p>served</p>")
    lap.sessions.exec(session.id, ["sh", "-c", "nohup python3 -m http.server 8123 >/dev/null 2>&1 &"])
    deadline = time.monotonic() + 30
    while 8123 not in [p.port for p in lap.ports.list(session.id).ports]:
        assert time.monotonic() < deadline, "the server in the sandbox never listened"
        time.sleep(0.1)
    answer = lap.ports.request(session.id, 8123, "GET", "index.html")
    assert (answer.status_code, answer.text) == (200, "<p>served</p>")
    assert lap.ports.url(session.id, 8123, "x").endswith(f"/sessions/{session.id}/ports/8123/x")
    preview = lap.ports.preview_url(session.id, 8123, ttl_seconds=60)
    assert preview.port == 8123 and "/_lap/preview/" in preview.url
    assert lap.ports.revoke_previews(session.id, port=8123).port == 8123


def test_a_fork_and_a_snapshot_carry_the_workspace(lap: Client, agent) -> None:
    source = ready_session(lap, agent)
    lap.files.write(source.id, "kept.txt", "state")
    snapshot = lap.snapshots.create(source.id, name=f"snap-{source.id[:8]}")
    assert snapshot.name in [s.name for s in lap.snapshots.list()]
    fork = lap.sessions.wait_ready(lap.sessions.fork(source.id, title="forked").id)
    restored = lap.sessions.wait_ready(lap.snapshots.start_session(snapshot.name, agent).id)
    for copy in (fork, restored):
        assert copy.id != source.id
        assert lap.files.read(copy.id, "kept.txt") == b"state"
        lap.sessions.delete(copy.id)
    lap.snapshots.delete(snapshot.name)
    assert lap.sessions.workspace(source.id).exists
    assert lap.sessions.delete(source.id).status == "deleted"
    assert lap.sessions.get(source.id).status is SessionStatus.DEAD


def test_a_session_pauses_hibernates_resumes_and_restarts(lap: Client, agent) -> None:
    s = ready_session(lap, agent)
    lap.files.write(s.id, "survives.txt", "yes")
    assert lap.sessions.pause(s.id).status is SessionStatus.PAUSED
    assert lap.sessions.resume(s.id).status is SessionStatus.READY
    assert lap.sessions.hibernate(s.id).status is SessionStatus.HIBERNATED
    # An exec wakes a hibernated session by itself.
    assert lap.sessions.exec(s.id, ["cat", "survives.txt"]).stdout == b"yes"
    assert lap.sessions.restart(s.id).status is SessionStatus.READY
    lap.sessions.delete(s.id)


def test_a_server_that_is_not_there_raises_a_connection_error_with_a_hint() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "lapk_any") as nowhere, pytest.raises(LapConnectionError) as err:
        nowhere.health()
    assert f"127.0.0.1:{port}" in err.value.message and "LAP_URL" in err.value.hint


def test_waiting_for_a_session_that_fails_raises_with_its_reason(lap: Client) -> None:
    # Its repo is on a host the agent may not reach: the clone fails, and so does the session.
    lap.agents.create(
        "sdk-unclonable", harness_id="shell", repo_url=f"https://{BLOCKED_HOST}/repo.git", deny_out=[BLOCKED_HOST]
    )
    try:
        created = lap.sessions.create("sdk-unclonable")
        with pytest.raises(SessionFailedError) as err:
            lap.sessions.wait_ready(created.id)
        assert err.value.session.status is SessionStatus.FAILED
        assert err.value.session.failure_reason and err.value.hint
    finally:
        lap.agents.delete("sdk-unclonable")
