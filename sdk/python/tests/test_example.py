"""The README's example runs as a program against the real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "run_and_read.py"


def test_the_example_runs_a_command_and_reads_its_file(agent: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), agent], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exit 0: wrote it\nthe file says: Linux\n"


def test_the_example_reports_an_unknown_agent_with_the_hint() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "no-such-agent"], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "hint: " in done.stderr
