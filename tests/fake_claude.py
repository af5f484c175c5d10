# A stand-in `claude` (stream-json over stdio, as Claude Code speaks it) for tests/kube_e2e.rs only:
# its pods' harness runs on the host, without the pod's network (no vault at the proxy address the
# session's environment names), so no real tool could reach a model there. Everything else is
# proved with the real claude (tests/claude_e2e.rs, tests/messages.rs, tests/send_abort.rs). Any
# text is echoed; `tool` gets a tool call and its result.
import json, os, sys, uuid

args = sys.argv[1:]
session = args[args.index("--resume") + 1] if "--resume" in args else str(uuid.uuid4())

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def stream(event):
    out({"type": "stream_event", "event": event, "session_id": session})

def result(text):
    out({"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": session,
         "usage": {"input_tokens": 5, "output_tokens": 3}})

for turn, line in enumerate(sys.stdin):
    msg = json.loads(line)
    if msg.get("type") != "user":
        continue
    text = msg["message"]["content"]
    mid = "m%d" % turn
    out({"type": "system", "subtype": "init", "session_id": session, "model": "stand-in", "cwd": os.getcwd()})
    stream({"type": "message_start", "message": {"id": mid, "role": "assistant", "content": []}})
    if text == "tool":
        stream({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "tu1", "name": "Bash", "input": {}}})
        out({"type": "assistant", "message": {"id": mid, "content": [{"type": "tool_use", "id": "tu1", "name": "Bash", "input": {"command": "pwd"}}]}, "session_id": session})
        out({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": os.getcwd(), "is_error": False}]}, "session_id": session})
        result("ran it")
    else:
        reply = "echo: " + text
        stream({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        for piece in (reply[: len(reply) // 2], reply[len(reply) // 2 :]):
            stream({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
        out({"type": "assistant", "message": {"id": mid, "content": [{"type": "text", "text": reply}]}, "session_id": session})
        stream({"type": "content_block_stop", "index": 0})
        result(reply)
