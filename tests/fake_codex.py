# A stand-in `codex app-server` for failure injection only (the real codex is proved in
# tests/codex_e2e.rs): JSON-RPC 2.0 over stdio, one message per line, as Codex speaks it, and no
# thread can be resumed (tests/messages.rs, codex_app_server_replaces_a_thread_it_cannot_resume).
import json, sys, uuid

args = sys.argv[1:]
assert args == ["app-server"], args
state = {"initialized": False, "thread": None, "turns": 0}

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def note(method, params):
    out({"method": method, "params": params})

def read():
    line = sys.stdin.readline()
    return json.loads(line) if line else None

while True:
    msg = read()
    if msg is None:
        break
    method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
    if method == "initialize":
        out({"id": rid, "result": {"userAgent": "fake-codex/0.0"}})
    elif method == "initialized":
        state["initialized"] = True
    elif not state["initialized"]:
        out({"id": rid, "error": {"code": -32600, "message": "Not initialized"}})
    elif method == "thread/start":
        thread = "thr_" + uuid.uuid4().hex[:8]
        state["thread"] = thread
        out({"id": rid, "result": {"thread": {"id": thread}, "model": params.get("model", "fake"), "cwd": "/work/home"}})
        note("thread/started", {"thread": {"id": thread}})
    elif method == "thread/resume":
        out({"id": rid, "error": {"code": -32600, "message": "no rollout found for thread id " + params["threadId"]}})
    elif method == "turn/start":
        assert params["threadId"] == state["thread"], params
        text = params["input"][0]["text"]
        state["turns"] += 1
        turn = "turn_%d" % state["turns"]
        out({"id": rid, "result": {"turn": {"id": turn, "status": "inProgress", "items": []}}})
        note("turn/started", {"threadId": state["thread"], "turn": {"id": turn, "status": "inProgress", "items": []}})
        note("item/started", {"item": {"type": "userMessage", "id": "u%d" % state["turns"], "content": params["input"]}})
        reply = "codex says: " + text
        aid = "a%d" % state["turns"]
        note("item/started", {"item": {"type": "agentMessage", "id": aid, "text": ""}})
        for piece in (reply[: len(reply) // 2], reply[len(reply) // 2 :]):
            note("item/agentMessage/delta", {"itemId": aid, "delta": piece})
        note("item/completed", {"item": {"type": "agentMessage", "id": aid, "text": reply}})
        note("thread/tokenUsage/updated", {"tokenUsage": {"last": {"inputTokens": 11, "outputTokens": 4}}})
        note("turn/completed", {"turn": {"id": turn, "status": "completed", "items": [], "error": None}})
