"""A real MCP client (the official `mcp` Python SDK) driving lap's MCP server, for tests/it/mcp.rs.

    mcp_client.py stdio LAP AGENT      -- runs `LAP mcp` (environment inherited) over stdio
    mcp_client.py http URL KEY AGENT   -- connects to URL (`…/mcp`) with `Authorization: Bearer KEY`
    mcp_client.py refused URL [KEY]    -- connects to URL without a key (or with a wrong one)

Prints one JSON object on stdout: what each step answered (`refused`: the error the client raised
and the HTTP statuses it got), for the Rust test to check.
"""

import json
import sys

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

# Every wait has a deadline: the whole conversation, real sandboxes included.
DEADLINE = 240


def result(res):
    """A tool result as plain JSON: isError, the structured content, the text."""
    return {
        "is_error": bool(res.is_error),
        "structured": res.structured_content,
        "text": "".join(getattr(c, "text", "") for c in res.content),
    }


async def conversation(session, agent):
    out = {}
    init = await session.initialize()
    out["server"] = init.server_info.name
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schemas"] = {t.name: t.input_schema for t in tools.tools}
    created = result(await session.call_tool("create_session", {"agent": agent}))
    out["create_session"] = created
    if created["is_error"]:
        return out
    sid = created["structured"]["id"]
    out["run_command"] = result(
        await session.call_tool(
            "run_command",
            {"session_id": sid, "command": "echo hello from $(hostname); echo oops >&2; exit 3"},
        )
    )
    await session.call_tool("run_command", {"session_id": sid, "command": "mkdir -p notes"})
    out["write_file"] = result(
        await session.call_tool(
            "write_file", {"session_id": sid, "path": "notes/hello.txt", "content": "written over MCP\n"}
        )
    )
    out["read_file"] = result(await session.call_tool("read_file", {"session_id": sid, "path": "notes/hello.txt"}))
    out["cat"] = result(await session.call_tool("run_command", {"session_id": sid, "command": "cat ~/notes/hello.txt"}))
    out["list_sessions"] = result(await session.call_tool("list_sessions", {}))
    out["egress_log"] = result(await session.call_tool("egress_log", {"session_id": sid}))
    out["unknown_session"] = result(
        await session.call_tool(
            "run_command", {"session_id": "00000000-0000-4000-8000-000000000000", "command": "true"}
        )
    )
    out["bad_input"] = result(await session.call_tool("write_file", {"session_id": sid, "path": "x", "content": "!", "encoding": "base64"}))
    out["delete_session"] = result(await session.call_tool("delete_session", {"session_id": sid}))
    return out


async def main():
    mode = sys.argv[1]
    with anyio.fail_after(DEADLINE):
        if mode == "stdio":
            lap, agent = sys.argv[2], sys.argv[3]
            import os

            params = StdioServerParameters(command=lap, args=["mcp"], env=dict(os.environ))
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    out = await conversation(session, agent)
        elif mode == "http":
            url, key, agent = sys.argv[2], sys.argv[3], sys.argv[4]
            client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
            async with client:
                async with streamable_http_client(url, http_client=client) as (read, write):
                    async with ClientSession(read, write) as session:
                        out = await conversation(session, agent)
        elif mode == "refused":
            url = sys.argv[2]
            headers = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
            out = {"statuses": []}

            async def record(response):
                out["statuses"].append(response.status_code)

            client = httpx2.AsyncClient(headers=headers, timeout=30, event_hooks={"response": [record]})
            try:
                async with client:
                    async with streamable_http_client(url, http_client=client) as (read, write):
                        async with ClientSession(read, write) as session:
                            await session.initialize()
                            out["initialized"] = True
            except BaseException as err:  # the SDK raises an exception group from its task group
                out["refused"] = describe(err)
        else:
            raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


def describe(err):
    if isinstance(err, BaseExceptionGroup):
        return " | ".join(describe(e) for e in err.exceptions)
    return f"{type(err).__name__}: {err}"


anyio.run(main)
