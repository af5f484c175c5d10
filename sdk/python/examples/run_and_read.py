"""Runs a command in a new session of an agent and reads back the file it wrote.

    python3 examples/run_and_read.py AGENT

Settings as the `lap` CLI's: LAP_URL and LAP_MASTER_KEY, else its config file (`lap login`).
"""

import sys

from lap_sdk import Client, LapError


def main(agent: str) -> int:
    with Client() as lap:
        session = lap.sessions.create(agent, title="sdk example")
        try:
            lap.sessions.wait_ready(session.id, timeout=120)
            result = lap.sessions.exec(session.id, ["sh", "-c", "uname -s > /tmp/os.txt && echo wrote it"])
            print(f"exit {result.exit_code}: {result.stdout_text.strip()}")
            print("the file says:", lap.files.read_text(session.id, "/tmp/os.txt").strip())
        finally:
            lap.sessions.delete(session.id)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: run_and_read.py AGENT")
    try:
        sys.exit(main(sys.argv[1]))
    except LapError as err:
        sys.exit(f"error: {err}")
