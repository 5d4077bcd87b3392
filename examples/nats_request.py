#!/usr/bin/env python3
"""Ask artifact storage something over NATS, without HTTP: a request on a subject of the contract.

    pip install nats-py
    python3 examples/nats_request.py artifacts.image.get \
        '{"component": "libfoo", "branch": "main", "architecture": "amd64"}'

Prints the JSON reply. A failed request also carries the NATS micro-service headers
Nats-Service-Error-Code (the HTTP status) and Nats-Service-Error, printed to stderr.
"""
import argparse
import asyncio
import os
import sys

import nats


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject")
    parser.add_argument("payload", help="the JSON request")
    parser.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--linux-username", help="identity header linux_username")
    parser.add_argument("--github-username", help="identity header github_username")
    args = parser.parse_args()

    headers = {}
    if args.linux_username:
        headers["linux_username"] = args.linux_username
    if args.github_username:
        headers["github_username"] = args.github_username

    nc = await nats.connect(args.server)
    try:
        reply = await nc.request(args.subject, args.payload.encode(), timeout=10, headers=headers or None)
    finally:
        await nc.close()
    code = (reply.headers or {}).get("Nats-Service-Error-Code")
    if code:
        print(f"Nats-Service-Error-Code: {code}", file=sys.stderr)
        print(f"Nats-Service-Error: {reply.headers.get('Nats-Service-Error')}", file=sys.stderr)
    print(reply.data.decode())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
