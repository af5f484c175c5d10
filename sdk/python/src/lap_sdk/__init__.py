"""Python SDK of lap: `Client` (sync) and `AsyncClient` (asyncio) for `lap serve`'s REST API.

    from lap_sdk import Client

    with Client() as lap:  # LAP_URL / LAP_MASTER_KEY, else the `lap` CLI's config
        session = lap.sessions.create("box")
        lap.sessions.wait_ready(session.id)
        print(lap.sessions.exec(session.id, ["echo", "hi"]).stdout_text)
"""

from . import models
from .aio import AsyncClient
from .client import Client
from .config import Settings, config_dir, resolve
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    LapConnectionError,
    LapError,
    LapTimeoutError,
    NotFoundError,
    SessionFailedError,
)
from .models import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConfigError",
    "ConflictError",
    "LapConnectionError",
    "LapError",
    "LapTimeoutError",
    "NotFoundError",
    "SessionFailedError",
    "Settings",
    "config_dir",
    "models",
    "resolve",
    *models.__all__,
]
