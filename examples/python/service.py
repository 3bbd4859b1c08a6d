#!/usr/bin/env python3
"""A minimal RMB service in Python, talking to a local rmb-peer through Redis.

Serves `calc.add`: the request body is a JSON list of numbers, the reply their sum.
Requests arrive on `msgbus.<command>`; replies go to `msgbus.system.reply`
(PROTOCOL.md section 4). Needs `pip install redis`.

    python3 service.py --redis redis://127.0.0.1:6379
"""
import argparse
import base64
import json
import time

import redis


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://localhost:6379", help="the rmb-peer's Redis")
    parser.add_argument("--cmd", default="calc.add", help="command to serve")
    parser.add_argument("--count", type=int, default=0, help="exit after this many requests (0: never)")
    args = parser.parse_args()
    r = redis.Redis.from_url(args.redis)
    print(f"serving {args.cmd}", flush=True)
    served = 0
    while not args.count or served < args.count:
        _, raw = r.brpop(f"msgbus.{args.cmd}")
        request = json.loads(raw)
        try:
            numbers = json.loads(base64.b64decode(request["dat"]))
            body, error = json.dumps(sum(numbers)).encode(), None
        except (ValueError, TypeError) as e:
            body, error = b"", {"code": 400, "message": f"expected a JSON list of numbers: {e}"}
        reply = {
            "ver": 1,
            "ref": request["ref"],
            "dat": base64.b64encode(body).decode(),
            "dst": request["src"],
            "shm": request.get("shm"),
            "now": int(time.time()),
            "err": error,
        }
        r.lpush("msgbus.system.reply", json.dumps(reply))
        served += 1


if __name__ == "__main__":
    main()
