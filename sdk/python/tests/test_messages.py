"""Messages through a real API harness: the real `claude` on the `claude-agent-sdk` harness, its
model the echoing fake Anthropic API of the Rust suite (tests/it/support/anthropic.rs), which answers
`echo: TEXT`. tests/it/sdk_python.rs makes the agent and names it in `LAP_SDK_CLAUDE_AGENT`."""

from __future__ import annotations

import asyncio
import os

import pytest

from conftest import ready_session
from lap_sdk import (
    AsyncClient,
    Client,
    DoneFrame,
    Event,
    HarnessEventFrame,
    Message,
    ReadyFrame,
)

pytestmark = pytest.mark.claude


@pytest.fixture(scope="module")
def claude_session(lap: Client):
    agent = os.environ.get("LAP_SDK_CLAUDE_AGENT")
    if not agent:
        pytest.skip("no LAP_SDK_CLAUDE_AGENT: run through `cargo nextest run --test it sdk_python::`")
    session = ready_session(lap, agent)
    yield session
    lap.sessions.delete(session.id)


def test_a_message_is_answered_with_the_reply(lap: Client, claude_session) -> None:
    reply = lap.messages.send(claude_session.id, "hello there")
    assert isinstance(reply, Message)
    assert reply.text == "echo: hello there"
    assert (reply.info.role, reply.info.finish, reply.info.harness) == ("assistant", "stop", "claude-agent-sdk")
    assert reply.info.tokens is not None and reply.info.tokens.output > 0
    assert reply.info.session_id and reply.info.time.created > 0


def test_a_streamed_turn_comes_as_typed_frames_ending_with_the_reply(lap: Client, claude_session) -> None:
    frames = list(lap.messages.stream(claude_session.id, "streamed"))
    assert isinstance(frames[0], ReadyFrame)
    assert isinstance(frames[-1], DoneFrame)
    assert frames[-1].message is not None and frames[-1].message.text == "echo: streamed"
    events = [f.event for f in frames if isinstance(f, HarnessEventFrame)]
    assert all(isinstance(e, Event) for e in events)
    types = [e.type for e in events]
    assert types.count("turn.started") == 1 and types[-1] == "turn.completed"
    assert events[-1].data["status"] == "completed"
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence numbers without gaps"
    deltas = [e.data["delta"] for e in events if e.type == "item.delta" and e.data["field"] == "text"]
    assert "".join(deltas) == "echo: streamed"


def test_the_history_and_the_event_log_hold_both_turns(lap: Client, claude_session) -> None:
    history = lap.messages.history(claude_session.id)
    assert [m.info.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert [m.text for m in history][1::2] == ["echo: hello there", "echo: streamed"]
    completed = 0
    for frame in lap.messages.events(claude_session.id, after=0):
        if isinstance(frame, HarnessEventFrame) and frame.event.type == "turn.completed":
            completed += 1
            if completed == 2:
                break
    assert completed == 2
    # Nothing runs: an abort has nothing to stop.
    abort = lap.messages.abort(claude_session.id)
    assert (abort.ok, abort.aborted) == (True, False)


def test_the_async_client_sends_and_streams(claude_session) -> None:
    async def run() -> None:
        async with AsyncClient() as lap:
            reply = await lap.messages.send(claude_session.id, "async hello")
            assert isinstance(reply, Message) and reply.text == "echo: async hello"
            frames = [f async for f in lap.messages.stream(claude_session.id, "async stream")]
            assert isinstance(frames[0], ReadyFrame) and isinstance(frames[-1], DoneFrame)
            assert frames[-1].message.text == "echo: async stream"

    asyncio.run(run())
