#!/usr/bin/env python3
"""aiortc data-channel peer speaking the `ugate webrtc` signalling: one JSON line per
description on stdout/stdin ({"type":"offer","sdp":"..."}), logs on stderr.

  aiortc_peer.py offer|answer (--echo | --send N) [--message-size N]

--echo echoes every message on every channel the other side opens until the connection ends;
--send N opens a channel, sends N pseudo-random bytes, waits for the echo and prints a result
line {"type":"result","bytes":..,"receivedBytes":..,"seconds":..,"mbps":..,"sentSHA256":..,
"receivedSHA256":..}. aioice never gathers 127.0.0.1, so its host-address discovery is patched
to return only 127.0.0.1 (see /work/shared/INTEROP.md).
"""
import argparse
import asyncio
import hashlib
import json
import os
import sys
import time

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def log(*parts):
    print("aiortc_peer:", *parts, file=sys.stderr, flush=True)


async def read_line(reader):
    while True:
        line = await reader.readline()
        if not line:
            return None
        line = line.strip()
        if line:
            return json.loads(line)


async def apply_remote(pc, reader, kind):
    """Reads signalling lines until a description of `kind` and applies it."""
    while True:
        message = await read_line(reader)
        if message is None:
            raise SystemExit(f"signalling ended before the {kind}")
        if message.get("type") == kind:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type=kind))
            return


def write_line(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def send_and_verify(channel, total, message_size, connected):
    opened = asyncio.Event()
    done = asyncio.Event()
    low = asyncio.Event()
    received = {"n": 0, "hash": hashlib.sha256()}
    channel.bufferedAmountLowThreshold = 1 << 20

    @channel.on("open")
    def _():
        opened.set()

    @channel.on("bufferedamountlow")
    def _():
        low.set()

    @channel.on("message")
    def _(message):
        data = message.encode() if isinstance(message, str) else message
        received["hash"].update(data)
        received["n"] += len(data)
        if received["n"] >= total:
            done.set()

    await connected.wait()
    if channel.readyState == "open":
        opened.set()
    await asyncio.wait_for(opened.wait(), 30)
    sent_hash = hashlib.sha256()
    start = time.monotonic()
    sent = 0
    counter = 0
    block = os.urandom(message_size)
    while sent < total:
        n = min(message_size, total - sent)
        chunk = counter.to_bytes(8, "big") + block[8:n] if n >= 8 else block[:n]
        counter += 1
        sent_hash.update(chunk)
        channel.send(chunk)
        sent += n
        if channel.bufferedAmount > 4 << 20:
            low.clear()
            await low.wait()
    if total:
        await asyncio.wait_for(done.wait(), 120)
    seconds = time.monotonic() - start
    channel.close()
    return {"type": "result", "bytes": total, "receivedBytes": received["n"], "seconds": seconds,
            "mbps": total * 8 / max(seconds, 1e-9) / 1e6,
            "sentSHA256": sent_hash.hexdigest(), "receivedSHA256": received["hash"].hexdigest()}


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["offer", "answer"])
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--send", type=int)
    parser.add_argument("--message-size", type=int, default=16384)
    args = parser.parse_args()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    pc = RTCPeerConnection()
    connected = asyncio.Event()
    ended = asyncio.Event()

    @pc.on("connectionstatechange")
    async def _():
        log("connection state", pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()
        if pc.connectionState in ("closed", "failed"):
            ended.set()

    @pc.on("datachannel")
    def _(channel):
        log("peer opened channel", channel.label)

        @channel.on("message")
        def _(message):
            channel.send(message)

        @channel.on("close")
        def _():
            log("channel closed", channel.label)

    result = None
    if args.role == "offer":
        # An offer needs a channel to have an m=application section; with --echo it stays idle.
        channel = pc.createDataChannel("aiortc-bulk" if args.send is not None else "aiortc-idle")
        task = asyncio.ensure_future(send_and_verify(channel, args.send, args.message_size, connected)) if args.send is not None else None
        await pc.setLocalDescription(await pc.createOffer())
        write_line({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp})
        await apply_remote(pc, reader, "answer")
    else:
        await apply_remote(pc, reader, "offer")
        await pc.setLocalDescription(await pc.createAnswer())
        write_line({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp})
        task = None
        if args.send is not None:
            task = asyncio.ensure_future(send_and_verify(pc.createDataChannel("aiortc-bulk"), args.send, args.message_size, connected))

    sctp = pc.sctp
    if task is not None:
        result = await asyncio.wait_for(task, 180)
        write_line(result)
        await pc.close()
    else:
        # Echo until the peer closes: aiortc reports a remote ABORT as the SCTP transport
        # leaving "connected", not always as a connection-state change, so watch both.
        while not ended.is_set():
            if sctp is not None and connected.is_set() and sctp.state == "closed":
                log("sctp closed by the peer")
                break
            await asyncio.sleep(0.05)
        await pc.close()
    if result is not None and not (result["bytes"] == result["receivedBytes"] and result["sentSHA256"] == result["receivedSHA256"]):
        raise SystemExit("echo differs")


asyncio.run(main())
