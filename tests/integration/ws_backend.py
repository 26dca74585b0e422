"""A WebSocket echo server for the tests (python3-websockets): echoes every message; "close:N"
closes with code N; "whoami" answers with the request path and headers it saw. Prints
"listening PORT" once ready. Usage: ws_backend.py [PORT]"""

import asyncio
import json
import sys

import websockets


async def handler(ws, path=None):
    path = path if path is not None else ws.path
    async for msg in ws:
        if isinstance(msg, str) and msg.startswith("close:"):
            await ws.close(int(msg[6:]), "as asked")
            return
        if msg == "whoami":
            await ws.send(json.dumps({"path": path, "headers": dict(ws.request_headers)}))
            continue
        await ws.send(msg)


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    async with websockets.serve(handler, "127.0.0.1", port, max_size=8 * 1024 * 1024,
                                ping_interval=None) as server:
        print("listening %d" % server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
