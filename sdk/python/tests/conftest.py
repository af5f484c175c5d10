"""Fixtures: a client of the `lap serve` named by `LAP_URL` and `LAP_MASTER_KEY` (tests/it/sdk_python.rs
starts a real one, local backend, real sandboxes), a shell agent and a ready session of it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from lap_sdk import Client, NotFoundError, Session

# The host the agent's egress policy denies: a request to it is refused by the session's vault
# (and logged) without any traffic leaving the machine.
BLOCKED_HOST = "blocked.test"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("LAP_URL") or not os.environ.get("LAP_MASTER_KEY"):
        raise pytest.UsageError(
            "these tests need a running `lap serve`: set LAP_URL and LAP_MASTER_KEY "
            "(`cargo nextest run --test it sdk_python::` starts one and does)"
        )


@pytest.fixture(scope="session")
def lap() -> Iterator[Client]:
    with Client() as client:
        yield client


@pytest.fixture(scope="session")
def agent(lap: Client) -> Iterator[str]:
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    lap.agents.create(name, harness_id="shell", deny_out=[BLOCKED_HOST])
    yield name
    lap.agents.delete(name)


def ready_session(lap: Client, agent: str) -> Session:
    return lap.sessions.wait_ready(lap.sessions.create(agent).id)


@pytest.fixture(scope="session")
def session(lap: Client, agent: str) -> Iterator[Session]:
    session = ready_session(lap, agent)
    yield session
    try:
        lap.sessions.delete(session.id)
    except NotFoundError:
        pass
