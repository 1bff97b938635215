#!/usr/bin/env python3
"""Runs two data-channel peers that speak JSON-line signalling on stdout/stdin and relays
between them; prints one JSON summary line.

  pair.py --offer 'CMD …' --answer 'CMD …' [--timeout S] [--log DIR] [--netns none|same|veth]

With --log DIR, each peer's stderr goes to DIR/offer.log and DIR/answer.log and every line it
printed on stdout (signalling and result) to DIR/offer.jsonl and DIR/answer.jsonl.

Each peer's stdout lines are forwarded to the other's stdin, except result lines
({"type":"result",…}), which are collected. After a peer prints its result and exits, the
other (the echoing side) must exit by itself within --close-wait seconds: that checks that a
close from one side reaches the other. Exit status 0 when every result is intact, both peers
exited 0 and the echo side saw the close.

--netns same runs both peers in one network namespace created for the run (loopback only, so
nothing leaves the machine and browsers cannot reach the internet); --netns veth runs them in
two namespaces joined by a veth pair (10.99.0.1 offerer, 10.99.0.2 answerer), for stacks that
gather no loopback candidates (libdatachannel's libjuice). `{addr}` in a command is replaced by
that peer's address (127.0.0.1 without veth). Namespaces are deleted at the end, after every
process in them was stopped by PID.
"""
import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

from peer_common import decode

VETH_ADDRESSES = {"offer": "10.99.0.1", "answer": "10.99.0.2"}


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True).stdout


class Namespaces:
    """The namespaces of one run: none, one shared ("same") or two joined by veth ("veth")."""

    def __init__(self, mode):
        self.mode = mode
        self.names = {}
        if mode == "none":
            return
        base = f"ugate-dc-{os.getpid()}"
        try:
            if mode == "same":
                ip("netns", "add", base + "-s")
                self.names = {"offer": base + "-s", "answer": base + "-s"}
                ip("-n", base + "-s", "link", "set", "lo", "up")
            else:
                self.names = {"offer": base + "-a", "answer": base + "-b"}
                for role, name in self.names.items():
                    ip("netns", "add", name)
                    ip("-n", name, "link", "set", "lo", "up")
                a, b = self.names["offer"], self.names["answer"]
                ip("-n", a, "link", "add", "ugdc0", "type", "veth", "peer", "name", "ugdc1", "netns", b)
                for role, dev in (("offer", "ugdc0"), ("answer", "ugdc1")):
                    name = self.names[role]
                    ip("-n", name, "addr", "add", VETH_ADDRESSES[role] + "/24", "dev", dev)
                    ip("-n", name, "link", "set", dev, "up")
                    # A default route inside the private namespace (it leads only to the other
                    # namespace): browsers enumerate addresses of interfaces with a route out.
                    other = VETH_ADDRESSES["answer" if role == "offer" else "offer"]
                    ip("-n", name, "route", "add", "default", "via", other)
        except Exception:
            self.delete()
            raise

    def address(self, role):
        return VETH_ADDRESSES[role] if self.mode == "veth" else "127.0.0.1"

    def wrap(self, role, argv):
        return argv if self.mode == "none" else ["ip", "netns", "exec", self.names[role], *argv]

    def delete(self):
        for name in sorted(set(self.names.values())):
            # Anything still running in our namespace was started by this run: stop it by PID.
            for pid in ip("netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", name, check=False)
        self.names = {}


def stop(proc, grace=3.0):
    """SIGTERM (peers clean up their own children, e.g. a browser), SIGKILL after `grace`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--offer", required=True)
    parser.add_argument("--answer", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--close-wait", type=float, default=15)
    parser.add_argument("--log", default=None, help="directory for the peers' stderr")
    parser.add_argument("--netns", choices=["none", "same", "veth"], default="none")
    parser.add_argument("--answer-head-start", type=float, default=0,
                        help="start the answerer this many seconds before the offerer (a browser needs time to start, "
                             "which would otherwise count in the offerer's offer-to-open time)")
    args = parser.parse_args()
    # SIGTERM (e.g. a test's watchdog) unwinds through the finally blocks: peers stopped,
    # namespaces deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    namespaces = Namespaces(args.netns)
    try:
        summary = run(args, namespaces)
    finally:
        namespaces.delete()
    print(json.dumps(summary), flush=True)
    sys.exit(0 if summary["ok"] else 1)


def run(args, namespaces):
    procs = {}
    try:
        for name, cmd in (("answer", args.answer), ("offer", args.offer)):
            err = open(os.path.join(args.log, name + ".log"), "wb") if args.log else subprocess.DEVNULL
            argv = namespaces.wrap(name, shlex.split(cmd.replace("{addr}", namespaces.address(name))))
            procs[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0)
            if name == "answer":
                time.sleep(args.answer_head_start)
        return relay_and_wait(args, procs)
    finally:
        for p in procs.values():
            stop(p)


def relay_and_wait(args, procs):
    results = {}

    def relay(src, dst):
        transcript = open(os.path.join(args.log, src + ".jsonl"), "wb") if args.log else None
        for raw in procs[src].stdout:
            line = raw.strip()
            if not line:
                continue
            if transcript:
                transcript.write(line + b"\n")
                transcript.flush()
            message = decode(line)
            if message.get("type") == "result":
                results[src] = message
                continue
            try:
                procs[dst].stdin.write(line + b"\n")
                procs[dst].stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    threads = [threading.Thread(target=relay, args=(a, b), daemon=True) for a, b in (("offer", "answer"), ("answer", "offer"))]
    for t in threads:
        t.start()

    deadline = time.monotonic() + args.timeout
    first_exit = None
    close_seen = False
    while time.monotonic() < deadline:
        states = {n: p.poll() for n, p in procs.items()}
        exited = [n for n, rc in states.items() if rc is not None]
        if exited and first_exit is None:
            first_exit = (exited[0], time.monotonic())
        if len(exited) == 2:
            close_seen = True
            break
        if first_exit and time.monotonic() - first_exit[1] > args.close_wait:
            break
        time.sleep(0.05)
    for p in procs.values():
        stop(p)
    for t in threads:
        t.join(timeout=2)

    intact = bool(results) and all(r["bytes"] == r["receivedBytes"] and r["sentSHA256"] == r["receivedSHA256"] for r in results.values())
    summary = {"ok": intact and close_seen and all(p.returncode == 0 for p in procs.values()),
               "closeSeen": close_seen, "intact": intact,
               "returnCodes": {n: p.returncode for n, p in procs.items()}, "results": results}
    return summary


if __name__ == "__main__":
    main()
