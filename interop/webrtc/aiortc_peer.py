#!/usr/bin/env python3
"""aiortc data-channel peer speaking the `ugate webrtc` signalling: one JSON line per
description on stdout/stdin ({"type":"offer","sdp":"..."}), logs on stderr.

  aiortc_peer.py offer|answer (--echo | --send N) [--channels K] [--message-size N] [--host-address IP]

--echo echoes every message on every channel the other side opens until the connection ends;
--send N opens a channel, sends N pseudo-random bytes, waits for the echo and prints a result
line {"type":"result","bytes":..,"receivedBytes":..,"seconds":..,"mbps":..,"sentSHA256":..,
"receivedSHA256":..,"channels":K,"openMs":..}; with --channels K the N bytes are spread over K
channels and the digests are SHA-256 over the per-channel hex digests in channel order; openMs is
the time from creating the offer (or receiving it) to the first open channel. aioice never
gathers 127.0.0.1, so its host-address discovery is patched to return only --host-address
(default 127.0.0.1; see /work/shared/INTEROP.md).
"""
import asyncio
import hashlib
import json
import os
import sys
import time

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from peer_common import arguments, combine, write_line



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


class Share:
    """One channel's part of a --send run: sends under a 4 MiB bufferedAmount window and
    hashes the echo."""

    def __init__(self, channel, total, message_size):
        self.channel = channel
        self.total = total
        self.message_size = message_size
        self.opened = asyncio.Event()
        self.done = asyncio.Event()
        self.low = asyncio.Event()
        self.received = 0
        self.received_hash = hashlib.sha256()
        self.sent_hash = hashlib.sha256()
        channel.bufferedAmountLowThreshold = 1 << 20
        channel.on("open", self.opened.set)
        channel.on("bufferedamountlow", self.low.set)
        channel.on("message", self.on_message)
        if total == 0:
            self.done.set()

    def on_message(self, message):
        data = message.encode() if isinstance(message, str) else message
        self.received_hash.update(data)
        self.received += len(data)
        if self.received >= self.total:
            self.done.set()

    async def run(self):
        sent = 0
        counter = 0
        block = os.urandom(self.message_size)
        while sent < self.total:
            n = min(self.message_size, self.total - sent)
            chunk = counter.to_bytes(8, "big") + block[8:n] if n >= 8 else block[:n]
            counter += 1
            self.sent_hash.update(chunk)
            self.channel.send(chunk)
            sent += n
            if self.channel.bufferedAmount > 4 << 20:
                self.low.clear()
                await self.low.wait()
        await asyncio.wait_for(self.done.wait(), 120)


async def send_all(shares, total, connected, started):
    """Waits for every channel to open, runs the shares together, returns the result line."""
    await connected.wait()
    for share in shares:
        if share.channel.readyState == "open":
            share.opened.set()
    await asyncio.wait_for(shares[0].opened.wait(), 30)
    open_ms = (time.monotonic() - started) * 1000
    await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in shares)), 30)
    start = time.monotonic()
    await asyncio.gather(*(s.run() for s in shares))
    seconds = time.monotonic() - start
    for share in shares:
        share.channel.close()

    return {"type": "result", "bytes": total, "receivedBytes": sum(s.received for s in shares), "seconds": seconds,
            "mbps": total * 8 / max(seconds, 1e-9) / 1e6,
            "sentSHA256": combine([s.sent_hash.hexdigest() for s in shares]),
            "receivedSHA256": combine([s.received_hash.hexdigest() for s in shares]),
            "channels": len(shares), "openMs": open_ms}


def open_shares(pc, total, channels, message_size):
    part = total // channels
    return [Share(pc.createDataChannel(f"aiortc-bulk-{i}"), total - part * (channels - 1) if i == 0 else part, message_size)
            for i in range(channels)]


async def main():
    args = arguments("aiortc_peer.py", message_size=16384,
                     extra=lambda p: p.add_argument("--host-address", default="127.0.0.1"))
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [args.host_address]

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
    task = None
    started = time.monotonic()
    if args.role == "offer":
        # An offer needs a channel to have an m=application section; with --echo it stays idle.
        if args.send is not None:
            shares = open_shares(pc, args.send, args.channels, args.message_size)
            task = asyncio.ensure_future(send_all(shares, args.send, connected, started))
        else:
            pc.createDataChannel("aiortc-idle")
        await pc.setLocalDescription(await pc.createOffer())
        write_line({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp})
        await apply_remote(pc, reader, "answer")
    else:
        await apply_remote(pc, reader, "offer")
        started = time.monotonic()
        await pc.setLocalDescription(await pc.createAnswer())
        write_line({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp})
        if args.send is not None:
            shares = open_shares(pc, args.send, args.channels, args.message_size)
            task = asyncio.ensure_future(send_all(shares, args.send, connected, started))

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
