#!/usr/bin/env python3
"""A minimal RMB client in Python, talking to a local rmb-peer through Redis.

Sends one request to a twin and prints the reply body. Requests go to
`msgbus.system.local`; the reply comes back on a list of our choosing (`ret`)
(PROTOCOL.md section 4). Needs `pip install redis`.

    python3 client.py --redis redis://127.0.0.1:6379 --dst 7 --cmd calc.add --data '[2, 3]'
"""
import argparse
import base64
import json
import sys
import time
import uuid

import redis


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://localhost:6379", help="the rmb-peer's Redis")
    parser.add_argument("--dst", type=int, required=True, help="destination twin id")
    parser.add_argument("--cmd", required=True, help="command to call")
    parser.add_argument("--data", default="", help="request body (usually JSON)")
    parser.add_argument("--timeout", type=int, default=30, help="seconds to wait for the reply")
    args = parser.parse_args()
    r = redis.Redis.from_url(args.redis)
    ret = f"example.reply.{uuid.uuid4()}"
    request = {
        "ver": 1,
        "ref": "python-example",
        "cmd": args.cmd,
        "exp": args.timeout,
        "dat": base64.b64encode(args.data.encode()).decode(),
        "tag": None,
        "dst": [args.dst],
        "ret": ret,
        "shm": "application/json",
        "now": int(time.time()),
    }
    r.lpush("msgbus.system.local", json.dumps(request))
    popped = r.brpop(ret, timeout=args.timeout)
    if popped is None:
        print(f"no reply within {args.timeout} s", file=sys.stderr)
        return 3
    reply = json.loads(popped[1])
    if reply.get("err"):
        print(f"error {reply['err']['code']}: {reply['err']['message']}", file=sys.stderr)
        return 2
    print(base64.b64decode(reply["dat"]).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
