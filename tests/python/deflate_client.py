"""permessage-deflate interop: Python's `websockets` (a full RFC 7692
implementation) against Switchboard's /echo, once per parameter set.

Usage: deflate_client.py ws://HOST:PORT/echo
Prints one line per parameter set; exits non-zero on the first failure.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

# (offer parameters, what the server must have agreed to)
CASES = [
    # What websockets offers by default: client_max_window_bits without a value.
    # The server's default compression_window_bits is 12.
    (dict(client_max_window_bits=True),
     dict(remote_no_context_takeover=True, local_max_window_bits=12)),
    (dict(server_no_context_takeover=True, client_no_context_takeover=True),
     dict(remote_no_context_takeover=True, local_no_context_takeover=True)),
    (dict(server_max_window_bits=9, client_max_window_bits=9),
     dict(remote_max_window_bits=9, local_max_window_bits=9)),
    (dict(server_max_window_bits=11, client_max_window_bits=15),
     dict(remote_max_window_bits=11, local_max_window_bits=12)),
    (dict(server_max_window_bits=15, client_max_window_bits=10, client_no_context_takeover=True),
     dict(remote_max_window_bits=12, local_max_window_bits=10, local_no_context_takeover=True)),
]


async def run(url):
    for offer, expected in CASES:
        factory = ClientPerMessageDeflateFactory(**offer)
        async with connect(url, extensions=[factory], compression=None, max_size=2**22) as ws:
            [extension] = ws.protocol.extensions
            for name, value in expected.items():
                got = getattr(extension, name)
                assert got == value, f"{offer}: {name} is {got}, expected {value}"
            for i in range(40):
                message = json.dumps({
                    "type": "message", "room": "lobby", "nick": f"guest-{i % 5}",
                    "text": "the quick brown fox jumps over the lazy dog " * (1 + i % 30),
                })
                await ws.send(message)
                echoed = await ws.recv()
                assert echoed == message, f"{offer}: message {i} came back changed"
            big = bytes(range(256)) * 4096
            await ws.send(big)
            assert await ws.recv() == big, f"{offer}: 1 MiB of binary came back changed"
            print(f"ok {offer} -> {extension!r}")


asyncio.run(run(sys.argv[1]))
