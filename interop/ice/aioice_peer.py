#!/usr/bin/env python3
"""An aioice (the ICE agent of aiortc) peer driven over stdin/stdout JSON lines.

Used by the ICE interop tests and the bench-ice command. One JSON object per line.

Out (stdout):
  {"type": "credentials", "ufrag": U, "pwd": P}
  {"type": "candidate", "line": "candidate:..."}       (RFC 8839 attribute value)
  {"type": "end-of-candidates"}
  {"type": "connected", "elapsed_ms": T}                (T from the first remote candidate or credentials)
  {"type": "datagram", "hex": H}                        (only with --report)
  {"type": "failed", "error": E}
In (stdin):
  {"type": "credentials", "ufrag": U, "pwd": P}
  {"type": "candidate", "line": "candidate:..."}
  {"type": "end-of-candidates"}
  {"type": "close"}

After connecting, every datagram received is echoed back prefixed with b"echo:", and
--greet N datagrams b"aioice:<i>" are sent. aioice never gathers 127.0.0.1 by itself, so the
host addresses are replaced with --address (default 127.0.0.1), see shared/INTEROP.md.
"""
import argparse
import asyncio
import json
import sys
import time

import aioice
import aioice.ice


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["controlling", "controlled"], required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--greet", type=int, default=0)
    args = parser.parse_args()

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [args.address]
    conn = aioice.Connection(ice_controlling=args.role == "controlling", components=1, use_ipv6=False)
    await conn.gather_candidates()
    emit({"type": "credentials", "ufrag": conn.local_username, "pwd": conn.local_password})
    for c in conn.local_candidates:
        emit({"type": "candidate", "line": "candidate:" + c.to_sdp()})
    emit({"type": "end-of-candidates"})

    loop = asyncio.get_running_loop()
    started = None
    closing = asyncio.Event()
    connected = asyncio.Event()
    have_credentials = asyncio.Event()  # aioice's connect() refuses to start without them

    async def read_stdin():
        nonlocal started
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                closing.set()
                return
            msg = json.loads(line)
            kind = msg["type"]
            if started is None and kind in ("credentials", "candidate"):
                started = time.monotonic()
            if kind == "credentials":
                conn.remote_username = msg["ufrag"]
                conn.remote_password = msg["pwd"]
                have_credentials.set()
            elif kind == "candidate":
                text = msg["line"]
                if text.startswith("a="):
                    text = text[2:]
                if text.startswith("candidate:"):
                    text = text[len("candidate:"):]
                await conn.add_remote_candidate(aioice.Candidate.from_sdp(text))
            elif kind == "end-of-candidates":
                await conn.add_remote_candidate(None)
            elif kind == "close":
                closing.set()
                return

    async def run_ice():
        await have_credentials.wait()
        try:
            await conn.connect()
        except Exception as e:  # reported to the driver, which fails the test
            emit({"type": "failed", "error": repr(e)})
            closing.set()
            return
        emit({"type": "connected", "elapsed_ms": (time.monotonic() - (started or time.monotonic())) * 1000})
        connected.set()
        for i in range(args.greet):
            await conn.send(b"aioice:%d" % i)
        while True:
            data = await conn.recv()
            await conn.send(b"echo:" + data)

    reader = asyncio.create_task(read_stdin())
    ice = asyncio.create_task(run_ice())
    await closing.wait()
    ice.cancel()
    reader.cancel()
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
