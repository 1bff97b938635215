#!/usr/bin/env python3
"""libdatachannel (pylibdatachannel, libdatachannel 0.22) data-channel peer speaking the
`ugate webrtc` signalling: one JSON line per description on stdout/stdin
({"type":"offer","sdp":"..."}), logs on stderr.

  libdatachannel_peer.py offer|answer (--echo | --send N) [--channels K] [--message-size N]

--echo echoes every message on every channel the other side opens until they have all closed
(or the connection ends); --send N opens K channels (default 1), spreads N pseudo-random bytes
over them, waits for the echo and prints {"type":"result",...,"channels":K,"openMs":...} like
`ugate webrtc --send`. With several channels the digests are SHA-256 over the per-channel hex
digests in channel order.

libjuice (libdatachannel's ICE) gathers no loopback candidates: run this on a veth pair between
two namespaces (interop/webrtc/pair.py --netns veth). The binding has no bufferedAmount, so the
sender paces itself with a credit window: bytes sent minus bytes echoed stay below 4 MiB per
channel.
"""
import hashlib
import os
import sys
import threading
import time

import pylibdatachannel as rtc
from peer_common import arguments, combine, decode, write_line

WINDOW = 4 << 20


def log(*parts):
    print("libdatachannel_peer:", *parts, file=sys.stderr, flush=True)


def read_description(kind):
    """Reads stdin until a description of `kind`; returns it and the candidates that came first."""
    pending = []
    for raw in sys.stdin:
        message = decode(raw)
        if message.get("type") == kind:
            return message["sdp"], pending
        if message.get("candidate"):
            pending.append(message)
    raise SystemExit(f"signalling ended before the {kind}")


def apply_description(pc, kind, sdp, pending):
    """Applies the peer's description, then (on a thread) the candidates it trickles."""
    pc.set_remote_description(rtc.Description(sdp, kind))
    threading.Thread(target=add_candidates, args=(pc, pending), daemon=True).start()


def add_candidates(pc, pending):
    """Adds candidates the peer trickles (an empty one just ends them)."""
    for message in pending:
        pc.add_remote_candidate(rtc.Candidate(message["candidate"], message.get("sdpMid") or "0"))
    for raw in sys.stdin:
        message = decode(raw)
        if message.get("candidate"):
            pc.add_remote_candidate(rtc.Candidate(message["candidate"], message.get("sdpMid") or "0"))


class Sender:
    """One channel's share: sends `total` bytes under a credit window and hashes the echo."""

    def __init__(self, channel, total, size, opened):
        self.channel = channel
        self.total = total
        self.size = size
        self.sent_hash = hashlib.sha256()
        self.received_hash = hashlib.sha256()
        self.received = 0
        self.cond = threading.Condition()
        self.done = threading.Event()
        self.closed = False
        channel.on_open(opened)
        channel.on_message(self.on_message)
        channel.on_closed(self.on_closed)
        if total == 0:
            self.done.set()

    def on_message(self, message):
        data = message.encode() if isinstance(message, str) else message
        with self.cond:
            self.received_hash.update(data)
            self.received += len(data)
            self.cond.notify()
        if self.received >= self.total:
            self.done.set()

    def on_closed(self):
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.done.set()

    def run(self):
        block = bytearray(os.urandom(self.size))
        sent = 0
        counter = 0
        while sent < self.total:
            n = min(self.size, self.total - sent)
            if n >= 8:
                block[:8] = counter.to_bytes(8, "big")
            chunk = bytes(block[:n])
            counter += 1
            with self.cond:
                while sent - self.received > WINDOW and not self.closed:
                    self.cond.wait(1)
                if self.closed:
                    return
            self.sent_hash.update(chunk)
            self.channel.send(chunk)
            sent += n
        self.done.wait(120)


def main():
    args = arguments("libdatachannel_peer.py")

    pc = rtc.PeerConnection(rtc.Configuration([]))
    gathered = threading.Event()
    ended = threading.Event()
    first_open = []
    start = [time.monotonic()]
    keep = []  # the binding does not hold channels alive by itself
    incoming = {"opened": 0, "closed": 0}
    lock = threading.Lock()

    def note_open():
        with lock:
            if not first_open:
                first_open.append((time.monotonic() - start[0]) * 1000)

    def on_gathering(state):
        if state == rtc.GatheringState.COMPLETE:
            gathered.set()

    def on_state(state):
        log("connection state", state.name)
        if state in (rtc.State.CLOSED, rtc.State.FAILED, rtc.State.DISCONNECTED):
            ended.set()

    def on_data_channel(channel):
        log("peer opened channel", channel.label)
        keep.append(channel)
        with lock:
            incoming["opened"] += 1
        note_open()

        def on_closed():
            with lock:
                incoming["closed"] += 1
                if incoming["closed"] == incoming["opened"]:
                    ended.set()

        channel.on_message(lambda message: channel.send(message))
        channel.on_closed(on_closed)

    pc.on_gathering_state_change(on_gathering)
    pc.on_state_change(on_state)
    pc.on_data_channel(on_data_channel)

    sending = args.send is not None
    senders = []

    def open_senders():
        share = args.send // args.channels
        for i in range(args.channels):
            channel = pc.create_data_channel(f"libdatachannel-bulk-{i}")
            keep.append(channel)
            total = args.send - share * (args.channels - 1) if i == 0 else share
            senders.append(Sender(channel, total, args.message_size, note_open))

    if args.role == "offer":
        start[0] = time.monotonic()
        if sending:
            open_senders()
        else:
            keep.append(pc.create_data_channel("libdatachannel-idle"))
        pc.set_local_description(rtc.DescriptionType.OFFER)
        if not gathered.wait(15):
            log("gathering did not complete in 15 s; sending what we have")
        write_line({"type": "offer", "sdp": str(pc.local_description)})
        apply_description(pc, rtc.DescriptionType.ANSWER, *read_description("answer"))
    else:
        offer, pending = read_description("offer")
        start[0] = time.monotonic()
        apply_description(pc, rtc.DescriptionType.OFFER, offer, pending)
        if not gathered.wait(15):
            log("gathering did not complete in 15 s; sending what we have")
        write_line({"type": "answer", "sdp": str(pc.local_description)})
        if sending:
            open_senders()

    if sending:
        deadline = time.monotonic() + 30
        while not all(s.channel.is_open for s in senders):
            if time.monotonic() > deadline or ended.is_set():
                raise SystemExit("channels did not open within 30 s")
            time.sleep(0.002)
        note_open()
        t0 = time.monotonic()
        threads = [threading.Thread(target=s.run) for s in senders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.monotonic() - t0
        for s in senders:
            s.channel.close()
        result = {"type": "result", "bytes": args.send, "receivedBytes": sum(s.received for s in senders),
                  "seconds": seconds, "mbps": args.send * 8 / max(seconds, 1e-9) / 1e6,
                  "sentSHA256": combine([s.sent_hash.hexdigest() for s in senders]),
                  "receivedSHA256": combine([s.received_hash.hexdigest() for s in senders]),
                  "channels": args.channels, "openMs": first_open[0] if first_open else None}
        time.sleep(0.2)  # let the stream resets leave before the connection closes
        pc.close()
        ended.wait(2)  # state CLOSED: SCTP and DTLS have said goodbye
        write_line(result)
        if not (result["bytes"] == result["receivedBytes"] and result["sentSHA256"] == result["receivedSHA256"]):
            raise SystemExit("echo differs")
    else:
        ended.wait()
        log("ended; connection", pc.state.name)
        if pc.state not in (rtc.State.CLOSED, rtc.State.FAILED):
            pc.close()


if __name__ == "__main__":
    # The binding's threads may outlive the connection: leave without waiting for them.
    code = 0
    try:
        main()
    except SystemExit as exit:
        if exit.code not in (None, 0):
            log(exit.code)
            code = exit.code if isinstance(exit.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
