"""The asyncio client against the same real server: the same calls, awaited."""

from __future__ import annotations

import asyncio

import pytest

from conftest import BLOCKED_HOST
from lap_sdk import AsyncClient, ExecExit, ExecOutput, NotFoundError, SessionStatus, TuiReply


async def _round_trip(agent: str) -> None:
    async with AsyncClient() as lap:
        created = await lap.sessions.create(agent, title="async")
        session = await lap.sessions.wait_ready(created.id)
        assert session.status is SessionStatus.READY

        result = await lap.sessions.exec(session.id, ["echo", "async hello"])
        assert (result.exit_code, result.stdout_text) == (0, "async hello\n")
        events = [e async for e in lap.sessions.exec_stream(session.id, ["sh", "-c", "echo a; echo b >&2; exit 2"])]
        assert [(e.stream, e.data) for e in events if isinstance(e, ExecOutput)] in (
            [("stdout", b"a\n"), ("stderr", b"b\n")],
            [("stderr", b"b\n"), ("stdout", b"a\n")],
        )
        assert events[-1] == ExecExit(2)

        await lap.files.write(session.id, "/tmp/async.txt", b"written async")
        assert await lap.files.read(session.id, "/tmp/async.txt") == b"written async"
        assert await lap.files.read(session.id, "/tmp/async.txt", offset=8, length=5) == b"async"
        assert (await lap.files.stat(session.id, "/tmp/async.txt")).size == 13

        listed = await lap.sessions.list(agent=agent)
        assert session.id in [s.id for s in listed]

        # Two calls at once on one client.
        shown, keys = await asyncio.gather(lap.sessions.get(session.id), lap.sessions.vault_keys(session.id))
        assert shown.id == session.id and keys == []

        await lap.sessions.exec(session.id, ["curl", "-s", "-o", "/dev/null", f"http://{BLOCKED_HOST}/async"])
        async for record in lap.sessions.follow_egress(session.id, timeout=30):
            if record.path == "/async":
                assert record.blocked and record.host == BLOCKED_HOST
                break
        else:
            pytest.fail("the blocked request never showed in the egress log")

        assert isinstance(await lap.messages.send(session.id, "hi"), TuiReply)

        with pytest.raises(NotFoundError) as err:
            await lap.sessions.get("00000000-0000-4000-8000-000000000000")
        assert err.value.status == 404 and "lap sessions list" in err.value.hint

        assert (await lap.sessions.delete(session.id)).status == "deleted"


def test_the_async_client_creates_runs_writes_reads_and_raises(agent: str) -> None:
    asyncio.run(_round_trip(agent))
