# A stand-in `opencode serve` for failure injection only (the real opencode is proved in
# tests/it/opencode_e2e.rs and tests/it/messages.rs): the part of the HTTP API and event bus (SSE) that
# lap's opencode harness uses for a turn, and a prompt `fail` refused with 400
# (tests/it/messages.rs, an_opencode_prompt_refusal_fails_the_turn_with_its_answer).
import json, os, queue, sys, threading, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
assert args[:1] == ["serve"], args
port = int(args[args.index("--port") + 1])
sessions = {}
subscribers = []
lock = threading.Lock()

def publish(kind, props):
    event = {"type": kind, "properties": props}
    with lock:
        for q in subscribers:
            q.put(event)

def reply_events(sid, text):
    n = uuid.uuid4().hex[:6]
    user, assistant = "msg_u" + n, "msg_a" + n
    publish("message.updated", {"info": {"id": user, "sessionID": sid, "role": "user"}})
    publish("message.part.updated", {"part": {"id": "prt_u" + n, "messageID": user, "sessionID": sid, "type": "text", "text": text}})
    publish("message.updated", {"info": {"id": assistant, "sessionID": sid, "role": "assistant", "time": {"created": 1}}})
    publish("message.part.updated", {"part": {"id": "prt_s" + n, "messageID": assistant, "sessionID": sid, "type": "step-start"}})
    reply = "opencode says: " + text
    half = len(reply) // 2
    for piece in (reply[:half], reply[half:]):
        publish("message.part.delta", {"sessionID": sid, "messageID": assistant, "partID": "prt_t" + n, "field": "text", "delta": piece})
    publish("message.part.updated", {"part": {"id": "prt_t" + n, "messageID": assistant, "sessionID": sid, "type": "text", "text": reply}})
    publish("message.part.updated", {"part": {"id": "prt_f" + n, "messageID": assistant, "sessionID": sid, "type": "step-finish", "reason": "stop"}})
    publish("message.updated", {"info": {"id": assistant, "sessionID": sid, "role": "assistant", "time": {"created": 1, "completed": 2},
                                          "tokens": {"input": 9, "output": 2, "reasoning": 0, "cache": {"read": 1, "write": 0}}, "cost": 0.02}})
    publish("session.idle", {"sessionID": sid})

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        if self.path == "/session":
            # The harness's readiness probe.
            return self.send(200, list(sessions.values()))
        if self.path == "/event":
            q = queue.Queue()
            with lock:
                subscribers.append(q)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'data: {"type":"server.connected","properties":{}}\n\n')
            self.wfile.flush()
            while True:
                event = q.get()
                self.wfile.write(("data: " + json.dumps(event) + "\n\n").encode())
                self.wfile.flush()
        self.send(404, {"error": "not found"})

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        body = self.body()
        if parts == ["session"]:
            sid = "ses_" + uuid.uuid4().hex[:12]
            sessions[sid] = {"id": sid, "title": body.get("title"), "directory": os.getcwd()}
            return self.send(200, sessions[sid])
        if len(parts) == 3 and parts[0] == "session" and parts[1] in sessions:
            sid = parts[1]
            if parts[2] == "prompt_async":
                text = body["parts"][0]["text"]
                if text == "fail":
                    return self.send(400, {"error": "this prompt is refused"})
                threading.Thread(target=reply_events, args=(sid, text), daemon=True).start()
                self.send_response(204)
                self.end_headers()
                return
        self.send(404, {"error": "not found"})

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
