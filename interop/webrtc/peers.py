"""The WebRTC data-channel peers interop/run and scripts/bench-webrtc drive, and one pair run.

Every peer speaks the same contract: `offer|answer`, JSON-line signalling on stdin/stdout,
`--echo` or `--send N [--channels K] [--message-size S]`, and with --send a final
{"type":"result",...} line (see pair.py). Where each runs:

  ugate           the built binary; loopback ICE needs --local-address, given as {addr}
  aiortc          aiortc_peer.py (pip install aiortc); host discovery patched to 127.0.0.1
  pion            pion_peer (apt-get install golang-go golang-github-pion-webrtc.v3-dev), built
                  offline into .build/interop on first use
  libdatachannel  libdatachannel_peer.py (pip install pylibdatachannel); libjuice gathers no
                  loopback candidates, so its pairs run over veth between two namespaces
  chromium        chromium_peer.py (apt-get install chromium), always inside a namespace
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

WEBRTC = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(WEBRTC))
NAMES = ["ugate", "aiortc", "pion", "libdatachannel", "chromium"]

# Pairs that cannot work, with the reason (reported, not counted as failures).
KNOWN_BROKEN = {
    frozenset({"pion", "libdatachannel"}):
        "pion v3.1.56's SCTP refuses libdatachannel 0.22's INIT (unknown parameter 0x8001, zero checksum)",
    frozenset({"aiortc", "libdatachannel"}):
        "aiortc's DTLS (Python cryptography) refuses libdatachannel's certificate (X.509 version field 1)",
}


class Peer:
    def __init__(self, name, argv, netns=None, channels=True, small_messages=False, options=(), startup=0.5):
        self.name = name
        self.argv = argv            # command prefix before the role
        self.options = list(options)  # after the role; {addr} is the peer's address (pair.py)
        self.netns = netns          # None, "same" (inside a namespace) or "veth"
        self.channels = channels    # understands --channels K
        self.small_messages = small_messages  # cannot receive messages >= 64 KiB
        self.startup = startup      # seconds to let it start before the offerer (open time fairness)

    def command(self, role, send=None, channels=1, message_size=65536):
        words = [*self.argv, role, *self.options]
        if send is None:
            words.append("--echo")
        else:
            words += ["--send", str(send), "--message-size", str(message_size)]
            if channels != 1:
                words += ["--channels", str(channels)]
        return " ".join(words)


def exit_on_sigterm():
    """SIGTERM unwinds like an exception, so a running pair is stopped and cleaned up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def ugate_supports_channels(binary):
    out = subprocess.run([binary, "webrtc", "offer", "--help"], capture_output=True, text=True)
    return "--channels" in out.stdout + out.stderr


def pion_binary():
    """The pion peer; pion_peer/build.sh builds it (offline, Debian's Go packages) when it is
    missing or older than its source, and decides that alone (the Swift tests call it too)."""
    binary = os.path.join(ROOT, ".build", "interop", "pion_peer")
    subprocess.run([os.path.join(WEBRTC, "pion_peer", "build.sh"), binary], capture_output=True)
    return binary if os.access(binary, os.X_OK) else None


def python_has(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def available(ugate, wanted=NAMES):
    """The peers of `wanted` that can run here; prints why the others cannot."""
    peers = {}
    for name in wanted:
        if name == "ugate":
            if os.access(ugate, os.X_OK):
                peers[name] = Peer(name, [ugate, "webrtc"], channels=ugate_supports_channels(ugate),
                                   options=["--local-address", "{addr}", "--timeout", "170"])
            else:
                print(f"ugate: {ugate} missing (swift build)", file=sys.stderr)
        elif name == "aiortc":
            if python_has("aiortc"):
                peers[name] = Peer(name, [sys.executable, os.path.join(WEBRTC, "aiortc_peer.py")], options=["--host-address", "{addr}"])
            else:
                print("aiortc: not installed (pip install aiortc)", file=sys.stderr)
        elif name == "pion":
            binary = pion_binary()
            if binary:
                peers[name] = Peer(name, [binary], small_messages=True)
            else:
                print("pion: not available (apt-get install golang-go golang-github-pion-webrtc.v3-dev)", file=sys.stderr)
        elif name == "libdatachannel":
            if python_has("pylibdatachannel"):
                peers[name] = Peer(name, [sys.executable, os.path.join(WEBRTC, "libdatachannel_peer.py")], netns="veth")
            else:
                print("libdatachannel: not installed (pip install pylibdatachannel)", file=sys.stderr)
        elif name == "chromium":
            if shutil.which("chromium"):
                peers[name] = Peer(name, [sys.executable, os.path.join(WEBRTC, "chromium_peer.py")], netns="same", startup=3)
            else:
                print("chromium: not installed (apt-get install chromium)", file=sys.stderr)
        else:
            raise SystemExit(f"unknown peer {name}; known: {', '.join(NAMES)}")
    return peers


def netns_mode(a, b):
    modes = {a.netns, b.netns}
    return "veth" if "veth" in modes else "same" if "same" in modes else "none"


def run_pair(offerer, answerer, sender, payload, channels=1, timeout=170, keep_logs_on_failure=True):
    """Runs one pair: `sender` ("offer" or "answer") sends `payload` bytes over `channels`
    channels, the other side echoes. Returns pair.py's summary plus "logs" (a directory kept
    when the run failed) and "netns"."""
    size = 16384 if offerer.small_messages or answerer.small_messages else 65536
    commands = {}
    for role, peer in (("offer", offerer), ("answer", answerer)):
        sends = role == sender
        commands[role] = peer.command(role, payload if sends else None, channels if sends else 1, size)
    mode = netns_mode(offerer, answerer)
    logs = tempfile.mkdtemp(prefix="ugate-interop-")
    proc = subprocess.Popen([sys.executable, os.path.join(WEBRTC, "pair.py"), "--offer", commands["offer"],
                             "--answer", commands["answer"], "--timeout", str(timeout), "--log", logs, "--netns", mode,
                             "--answer-head-start", str(answerer.startup)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate()
    finally:
        # Interrupted: SIGTERM lets pair.py stop its peers and delete its namespaces.
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {"ok": False, "results": {}, "error": stderr.strip()[-500:]}
    summary["netns"] = mode
    summary["messageSize"] = size
    summary["logs"] = logs
    summary["log"] = {}
    for role in ("offer", "answer"):
        try:
            with open(os.path.join(logs, role + ".log"), errors="replace") as f:
                summary["log"][role] = f.read()
        except OSError:
            summary["log"][role] = ""
    if summary.get("ok") or not keep_logs_on_failure:
        shutil.rmtree(logs, ignore_errors=True)
        summary["logs"] = None
    return summary
