import json, os, socket, ssl, threading, time

proxy = os.environ["HTTPS_PROXY"].split("//", 1)[1].rstrip("/")
phost, pport = proxy.rsplit(":", 1)
target = os.environ["TARGET"]
host = target.rsplit(":", 1)[0]
n = int(os.environ["N"])
out = os.environ["OUT"]
mode = os.environ["MODE"]
wait = float(os.environ["WAIT"])
stub = os.environ["GITHUB_TOKEN"]


def context(alpn):
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols([alpn])
    return ctx


contexts = {"h2": context("h2"), "http/1.1": context("http/1.1")}


def readn(s, k):
    data = b""
    while len(data) < k:
        chunk = s.recv(k - len(data))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(data), k))
        data += chunk
    return data


def head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += readn(s, 1)
    return data.decode("latin-1")


def header(text, name):
    for line in text.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def read_frame(s):
    h = readn(s, 9)
    return h[3], h[4], int.from_bytes(h[5:9], "big") & 0x7FFFFFFF, readn(s, int.from_bytes(h[:3], "big"))


def literal(name, value):
    name, value = name.encode(), value.encode()
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def h2_get(s):
    block = b"".join(
        literal(k, v)
        for k, v in [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/pressure"),
            (":authority", target),
            ("authorization", "Bearer " + stub),
        ]
    )
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    status = None
    while True:
        kind, flags, stream, payload = read_frame(s)
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))
        elif kind == 6 and not flags & 1:
            s.sendall(frame(6, 1, 0, payload))
        elif kind == 1 and stream == 1:
            # :status 200 is entry 8 of HPACK's static table: 0x88.
            status = "200" if payload[:1] == b"\x88" else "not 200: %r" % payload[:8]
            if flags & 1:
                return status
        elif kind == 0 and stream == 1 and flags & 1:
            return status
        elif kind == 7:
            raise EOFError("GOAWAY before the response")
        elif kind == 3 and stream == 1:
            raise EOFError("RST_STREAM")


def h1_get(s):
    s.sendall(("GET /pressure HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n" % (target, stub)).encode())
    text = head(s)
    if (header(text, "transfer-encoding") or "").lower() == "chunked":
        while True:
            line = b""
            while not line.endswith(b"\r\n"):
                line += readn(s, 1)
            size = int(line.strip().split(b";")[0], 16)
            readn(s, size + 2)
            if size == 0:
                break
    else:
        readn(s, int(header(text, "content-length") or "0"))
    return text.split(" ")[1]


def tunnel(i):
    s = socket.create_connection((phost, int(pport)), timeout=wait)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    text = head(s)
    status = text.split(" ")[1]
    if status != "200":
        s.close()
        return {"refused": status, "blocked": header(text, "x-lap-vault-blocked")}
    alpn = "h2" if i % 2 == 0 else "http/1.1"
    t = contexts[alpn].wrap_socket(s, server_hostname=host)
    got = t.selected_alpn_protocol()
    code = h2_get(t) if got == "h2" else h1_get(t)
    return {"open": t, "alpn": got, "status": code, "at": time.monotonic()}


def open_all(count, retry=False):
    # With `retry`, a refused tunnel is tried again until the deadline: a place frees a moment
    # after the client has seen its tunnel closed.
    results = [None] * count
    deadline = time.monotonic() + wait

    def run(i):
        while True:
            try:
                results[i] = tunnel(i)
            except Exception as e:
                results[i] = {"error": "%s: %s" % (type(e).__name__, e)}
            if not (retry and "refused" in results[i] and time.monotonic() < deadline):
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(results):
    s = {"open": 0, "ok": 0, "alpn": {}, "refused": {}, "errors": []}
    for r in results:
        if "open" in r:
            s["open"] += 1
            s["ok"] += r["status"] == "200"
            s["alpn"][r["alpn"]] = s["alpn"].get(r["alpn"], 0) + 1
        elif "refused" in r:
            key = "%s %s" % (r["refused"], r["blocked"])
            s["refused"][key] = s["refused"].get(key, 0) + 1
        else:
            s["errors"].append(r["error"])
    return s


def report(name, data):
    with open(out + "." + name + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(out + "." + name + ".tmp", out + "." + name)


def until_closed(r):
    # The vault closes an idle tunnel: an HTTP/2 client sees GOAWAY first, then the end of the stream.
    s = r["open"]
    s.settimeout(wait)
    goaway = False
    try:
        while True:
            if r["alpn"] == "h2":
                kind = read_frame(s)[0]
                goaway = goaway or kind == 7
            elif not s.recv(1024):
                break
    except (EOFError, ConnectionError, ssl.SSLError) as e:
        pass
    except socket.timeout:
        return {"error": "still open after %ss" % wait}
    return {"idle": time.monotonic() - r["at"], "goaway": goaway}


results = open_all(n)
report("opened", summary(results))
if mode == "hold":
    deadline = time.monotonic() + wait
    while not os.path.exists(out + ".release") and time.monotonic() < deadline:
        time.sleep(0.05)
else:
    closed = [None] * n
    threads = []
    for i, r in enumerate(results):
        if "open" in r:
            def run(i=i, r=r):
                closed[i] = until_closed(r)
            threads.append(threading.Thread(target=run))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    closed = [c for c in closed if c is not None]
    idle = [c["idle"] for c in closed if "idle" in c]
    report("closed", {
        "closed": len(idle),
        "goaway": sum(1 for c in closed if c.get("goaway")),
        "min_idle": min(idle) if idle else None,
        "max_idle": max(idle) if idle else None,
        "errors": [c["error"] for c in closed if "error" in c],
    })
    report("reopened", summary(open_all(n, retry=True)))
for r in results:
    if "open" in r:
        r["open"].close()
