#!/usr/bin/env python3
"""Headless Chromium data-channel peer speaking the `ugate webrtc` signalling: one JSON line per
description on stdout/stdin ({"type":"offer","sdp":"..."}), logs on stderr.

  chromium_peer.py offer|answer (--echo | --send N) [--channels K] [--message-size N]

Runs `chromium --headless=new` with `--remote-debugging-pipe` (DevTools protocol as
NUL-terminated JSON on fds 3/4, no port) on chromium_peer.html and drives the page with
Runtime.evaluate; the page reports back through a Runtime.addBinding binding. --echo echoes
every message on every channel the other side opens until they close; --send N opens K
channels (default 1), spreads N bytes over them, waits for the echo and prints
{"type":"result",...,"channels":K,"openMs":...} like `ugate webrtc --send`.

Chromium tries to reach update servers: run this inside a network namespace with no route out
(interop/webrtc/pair.py --netns does). Flags from /work/shared/INTEROP.md; mDNS host-name
candidates are switched off (WebRtcHideLocalIpsWithMdns) and the page asks for a (fake)
microphone first, which makes Chromium gather its real host addresses, 127.0.0.1 included.
"""
import ctypes
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from peer_common import arguments, decode, write_line

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
    "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-dev-shm-usage", "--mute-audio",
]


def log(*parts):
    print("chromium_peer:", *parts, file=sys.stderr, flush=True)


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("chromium not found (apt-get install chromium)")


class DevTools:
    """The DevTools protocol over --remote-debugging-pipe: commands by id, events to a queue."""

    def __init__(self, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def wire_fds():
            # Move both ends out of the way first: either may already sit on fd 3 or 4.
            r, w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)
            # The browser dies with this process even if it is killed (PR_SET_PDEATHSIG).
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)

        self.proc = subprocess.Popen([chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=wire_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.pending = {}
        self.lock = threading.Lock()
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        while True:
            try:
                data = os.read(self.from_chrome, 1 << 20)
            except OSError:
                data = b""
            if not data:
                self.events.put({"method": "closed"})
                with self.lock:
                    for slot in self.pending.values():
                        slot.put({"error": {"message": "browser closed the DevTools pipe"}})
                return
            buffer += data
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self.lock:
                        slot = self.pending.pop(message["id"], None)
                    if slot:
                        slot.put(message)
                else:
                    self.events.put(message)

    def call(self, method, params=None, session=None, timeout=60):
        with self.lock:
            self.next_id += 1
            ident = self.next_id
            slot = queue.Queue(1)
            self.pending[ident] = slot
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        try:
            reply = slot.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"DevTools {method}: no reply in {timeout} s")
        if "error" in reply:
            raise SystemExit(f"DevTools {method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except SystemExit:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Page:
    def __init__(self, tools):
        self.tools = tools
        target = tools.call("Target.createTarget", {"url": "file://" + os.path.join(HERE, "chromium_peer.html")})
        self.session = tools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        tools.call("Runtime.enable", session=self.session)
        tools.call("Runtime.addBinding", {"name": "ugateReport"}, session=self.session)
        deadline = time.monotonic() + 30
        while self.evaluate("typeof makeOffer") != "function":
            if time.monotonic() > deadline:
                raise SystemExit("chromium_peer.html did not load")
            time.sleep(0.05)

    def evaluate(self, expression, timeout=60):
        result = self.tools.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                                 session=self.session, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise SystemExit(f"page: {expression[:60]}…: {text}")
        return result.get("result", {}).get("value")

    def reports(self):
        """Yields the page's reports (decoded), and None when the browser went away."""
        while True:
            event = self.tools.events.get()
            if event.get("method") == "closed":
                yield None
                return
            if event.get("method") == "Runtime.bindingCalled" and event["params"]["name"] == "ugateReport":
                yield json.loads(event["params"]["payload"])
            elif event.get("method") == "Runtime.consoleAPICalled":
                log("console:", " ".join(str(a.get("value", a.get("description", ""))) for a in event["params"]["args"]))


def read_signalling(page, kind, ready):
    """Reads stdin: the description of `kind` is handed over through `ready`; candidates
    (trickled by the peer) go straight into the page."""
    for raw in sys.stdin:
        message = decode(raw)
        if message.get("type") == kind:
            ready.put(message["sdp"])
        elif "candidate" in message:
            page.evaluate(f"addCandidate({json.dumps(message['candidate'])})")
    ready.put(None)


def main():
    args = arguments("chromium_peer.py", extra=lambda p: p.add_argument("--timeout", type=float, default=170))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    profile = tempfile.mkdtemp(prefix="ugate-chromium-")
    tools = DevTools(profile)
    watchdog = threading.Timer(args.timeout, lambda: (log("timed out"), tools.proc.kill(), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    try:
        page = Page(tools)
        reports = page.reports()
        threading.Thread(target=lambda: forward_reports(reports), daemon=True).start()
        description = queue.Queue()
        remote = "answer" if args.role == "offer" else "offer"
        threading.Thread(target=read_signalling, args=(page, remote, description), daemon=True).start()
        sending = args.send is not None
        if args.role == "offer":
            sdp = page.evaluate(f"makeOffer({args.channels if sending else 0})")
            write_line({"type": "offer", "sdp": sdp})
            answer = description.get()
            if answer is None:
                raise SystemExit("signalling ended before the answer")
            page.evaluate(f"acceptAnswer({json.dumps(answer)})")
        else:
            offer = description.get()
            if offer is None:
                raise SystemExit("signalling ended before the offer")
            write_line({"type": "answer", "sdp": page.evaluate(f"makeAnswer({json.dumps(offer)})")})
        if sending:
            result = page.evaluate(f"sendAll({args.send}, {args.channels}, {args.message_size})", timeout=args.timeout)
            page.evaluate("closeAll()")
            write_line(result)
            if not (result["bytes"] == result["receivedBytes"] and result["sentSHA256"] == result["receivedSHA256"]):
                raise SystemExit("echo differs")
        else:
            ENDED.wait()
            log("ended:", ENDED_WHY[0] if ENDED_WHY else "?")
            page.evaluate("closeAll()")
    finally:
        tools.close()
        shutil.rmtree(profile, ignore_errors=True)


ENDED = threading.Event()
ENDED_WHY = []


def forward_reports(reports):
    for report in reports:
        if report is None:
            ENDED_WHY.append("browser closed")
            ENDED.set()
            return
        kind = report.get("type")
        if kind == "ended":
            ENDED_WHY.append(report.get("why"))
            ENDED.set()
        elif kind == "candidate":
            pass  # every candidate is in the description (non-trickle)
        else:
            log(json.dumps(report))


if __name__ == "__main__":
    main()
