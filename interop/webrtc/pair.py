#!/usr/bin/env python3
"""Runs two data-channel peers that speak JSON-line signalling on stdout/stdin and relays
between them; prints one JSON summary line.

  pair.py --offer 'CMD …' --answer 'CMD …' [--timeout S] [--log DIR]

Each peer's stdout lines are forwarded to the other's stdin, except result lines
({"type":"result",…}), which are collected. After a peer prints its result and exits, the
other (the echoing side) must exit by itself within --close-wait seconds: that checks that a
close from one side reaches the other. Exit status 0 when every result is intact, both peers
exited 0 and the echo side saw the close.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--offer", required=True)
    parser.add_argument("--answer", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--close-wait", type=float, default=15)
    parser.add_argument("--log", default=None, help="directory for the peers' stderr")
    args = parser.parse_args()

    procs = {}
    results = {}
    for name, cmd in (("offer", args.offer), ("answer", args.answer)):
        err = open(os.path.join(args.log, name + ".log"), "wb") if args.log else subprocess.DEVNULL
        procs[name] = subprocess.Popen(shlex.split(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=err, bufsize=0)

    def relay(src, dst):
        for raw in procs[src].stdout:
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("type") == "result":
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
        if p.poll() is None:
            p.kill()
        p.wait()
    for t in threads:
        t.join(timeout=2)

    intact = bool(results) and all(r["bytes"] == r["receivedBytes"] and r["sentSHA256"] == r["receivedSHA256"] for r in results.values())
    summary = {"ok": intact and close_seen and all(p.returncode == 0 for p in procs.values()),
               "closeSeen": close_seen, "intact": intact,
               "returnCodes": {n: p.returncode for n, p in procs.items()}, "results": results}
    print(json.dumps(summary), flush=True)
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
