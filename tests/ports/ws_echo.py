# A WebSocket echo server from Python's standard library alone (tests/it/ports.rs runs it inside a
# sandbox): a raw RFC 6455 handshake, then every text or binary message comes back prefixed with
# `echo:`. Usage: python3 ws_echo.py PORT
import asyncio
import base64
import hashlib
import struct
import sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def handle(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    key = None
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("sec-websocket-key:"):
            key = line.split(":", 1)[1].strip()
    if key is None:
        body = b"not a websocket request\n"
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()
        return
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n\r\n" % accept
        ).encode()
    )
    await writer.drain()
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            op, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
            if op == 8:
                writer.write(b"\x88\x00")
                await writer.drain()
                break
            if op in (1, 2):
                data = b"echo:" + data
                header = bytes([0x80 | op])
                if len(data) < 126:
                    header += bytes([len(data)])
                elif len(data) < 65536:
                    header += bytes([126]) + struct.pack(">H", len(data))
                else:
                    header += bytes([127]) + struct.pack(">Q", len(data))
                writer.write(header + data)
                await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
