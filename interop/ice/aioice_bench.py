#!/usr/bin/env python3
"""Median time from starting checks to connected for two aioice agents on loopback.

Both agents gather first; the clock starts when credentials and candidates are handed over
(the moment checks can start) and stops when both connect() calls have returned.
Prints one JSON object: {"runs": N, "median_ms": M, "samples_ms": [...]}.
"""
import argparse
import asyncio
import json
import statistics
import time

import aioice
import aioice.ice


async def once():
    a = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    b = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await asyncio.gather(a.gather_candidates(), b.gather_candidates())
    start = time.perf_counter()
    for x, y in ((a, b), (b, a)):
        x.remote_username = y.local_username
        x.remote_password = y.local_password
        for c in y.local_candidates:
            await x.add_remote_candidate(c)
        await x.add_remote_candidate(None)
    await asyncio.gather(a.connect(), b.connect())
    elapsed = (time.perf_counter() - start) * 1000
    await asyncio.gather(a.close(), b.close())
    return elapsed


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    samples = [await once() for _ in range(args.runs)]
    print(json.dumps({"runs": args.runs, "median_ms": statistics.median(samples), "samples_ms": samples}))


if __name__ == "__main__":
    asyncio.run(main())
