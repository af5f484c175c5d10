import json, os, sys, uuid

args = sys.argv[1:]
def flag(name):
    return args[args.index(name) + 1] if name in args else None

resume = flag("--resume")
if resume == "gone":
    sys.stderr.write("No conversation found with session ID: gone\n")
    sys.exit(1)
session = resume or str(uuid.uuid4())
model = flag("--model") or "fake-model"
total = [0.0]
turns = [0]

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def stream(event):
    out({"type": "stream_event", "event": event, "session_id": session})

def text_block(mid, index, pieces):
    stream({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
    for piece in pieces:
        stream({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})
    out({"type": "assistant", "message": {"id": mid, "content": [{"type": "text", "text": "".join(pieces)}]}, "session_id": session})
    stream({"type": "content_block_stop", "index": index})

def result(text, subtype="success", is_error=False, extra=None):
    total[0] += 0.01
    body = {"type": "result", "subtype": subtype, "is_error": is_error, "result": text, "session_id": session,
            "total_cost_usd": total[0], "usage": {"input_tokens": 5, "output_tokens": 3}}
    body.update(extra or {})
    out(body)

for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") == "control_request":
        out({"type": "control_response", "response": {"subtype": "success", "request_id": msg["request_id"]}})
        continue
    if msg.get("type") != "user":
        continue
    text = msg["message"]["content"]
    turns[0] += 1
    out({"type": "system", "subtype": "init", "session_id": session, "model": model, "cwd": os.getcwd()})
    mid = "m%d" % turns[0]
    stream({"type": "message_start", "message": {"id": mid, "role": "assistant", "content": []}})
    if text == "crash":
        stream({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        stream({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}})
        sys.stderr.write("fake claude crashed\n")
        sys.exit(3)
    elif text == "slow":
        stream({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        stream({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "working"}})
        req = json.loads(sys.stdin.readline())
        assert req["request"]["subtype"] == "interrupt", req
        out({"type": "control_response", "response": {"subtype": "success", "request_id": req["request_id"]}})
        out({"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "[Request interrupted by user]"}]}})
        result("", "error_during_execution", True, {"terminal_reason": "aborted_streaming"})
    elif text == "hang":
        # A tool that ignores the interrupt: the turn ends only when lap serve kills it.
        stream({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        stream({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "stuck"}})
        for _ in sys.stdin:
            pass
        sys.exit(0)
    elif text == "tool":
        stream({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "tu1", "name": "Bash", "input": {}}})
        stream({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"command\":\"pwd\"}"}})
        out({"type": "assistant", "message": {"id": mid, "content": [{"type": "tool_use", "id": "tu1", "name": "Bash", "input": {"command": "pwd"}}]}, "session_id": session})
        out({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": os.getcwd(), "is_error": False}]}, "session_id": session})
        mid2 = mid + "b"
        stream({"type": "message_start", "message": {"id": mid2, "role": "assistant", "content": []}})
        text_block(mid2, 0, ["ran ", "it"])
        result("ran it")
    else:
        if text == "args":
            reply = json.dumps(args)
        elif text == "env":
            reply = "key=" + os.environ.get("ANTHROPIC_API_KEY", "")
        else:
            reply = "echo: " + text
        half = len(reply) // 2
        text_block(mid, 0, [reply[:half], reply[half:]])
        result(reply)
