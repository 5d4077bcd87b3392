#!/usr/bin/env python3
"""Ask artifact storage something over NATS, without HTTP: a request on a subject of the contract.

    pip install nats-py
    export ARTIFACTS_KEY=ak_...          # an API key (or the admin key)
    python3 examples/nats_request.py artifacts.image.get \\
        '{"component": "hello", "branch": "main", "architecture": "amd64"}'

    # a component's tarball, fetched in chunks over NATS and checked against its digest
    python3 examples/nats_request.py --download hello-component.tar.gz \\
        '{"component": "hello-component", "tag": "v1.0.0", "architecture": "amd64"}'

The client connects with its key: user name = the key id (`admin` for the bootstrap admin key), password
= the key; its replies come to its own inbox prefix `_INBOX_<key id>`, which no other connection may
read. Each request also carries `Authorization: Bearer <key>`.

(`hello` and `hello-component` are what the README's tour builds.)

Prints the JSON reply. A failed request also carries the NATS micro-service headers
Nats-Service-Error-Code (the HTTP status) and Nats-Service-Error, printed to stderr. Exit status, as the
`artifacts` client's: 0 the request succeeded, 1 it failed (a 4xx or 5xx answer, no answer), 2 usage or
no connection.
"""
import argparse
import asyncio
import hashlib
import json
import os
import re
import sys

import nats
from nats.errors import Error as NatsError


def key_id(key: str) -> str:
    """The NATS user name of a key: the id of a managed key `ak_<id>_<secret>`, else `admin`."""
    match = re.fullmatch(r"ak_([0-9a-f]{16})_.+", key)
    return match.group(1) if match else "admin"


async def quiet(_error) -> None:
    """nats-py prints every connection error with a traceback; the one that matters is raised instead."""


async def download(nc, headers, payload: bytes, out_path: str) -> int:
    reply = await nc.request("artifacts.component.archive", payload, timeout=10, headers=headers)
    answer = json.loads(reply.data)
    if (reply.headers or {}).get("Nats-Service-Error-Code"):
        print(json.dumps(answer), file=sys.stderr)
        return 1
    digest = hashlib.sha256()
    with open(out_path, "wb") as out:
        while True:
            chunk = await nc.request(answer["transfer"], b"", timeout=30)
            out.write(chunk.data)
            digest.update(chunk.data)
            end = (chunk.headers or {}).get("Artifacts-Archive-End")
            if end:
                break
    got = f"sha256:{digest.hexdigest()}"
    if got != answer["digest"]:
        print(f"digest mismatch: got {got}, expected {answer['digest']}", file=sys.stderr)
        return 1
    print(json.dumps({"status": "downloaded", "file": out_path, "digest": got, "size": answer["size"]}))
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", nargs="?", help="the subject to request (not with --download)")
    parser.add_argument("payload", help="the JSON request")
    parser.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--key", default=os.environ.get("ARTIFACTS_KEY"), help="API key (default: $ARTIFACTS_KEY)")
    parser.add_argument("--download", metavar="FILE", help="fetch the component's tarball into FILE")
    parser.add_argument("--linux-username", help="identity header linux_username")
    parser.add_argument("--github-username", help="identity header github_username")
    args = parser.parse_args()
    if not args.key:
        parser.error("an API key is needed: --key or ARTIFACTS_KEY")
    if not args.download and not args.subject:
        parser.error("name a subject, or --download FILE")

    headers = {"Authorization": f"Bearer {args.key}"}
    if args.linux_username:
        headers["linux_username"] = args.linux_username
    if args.github_username:
        headers["github_username"] = args.github_username

    user = key_id(args.key)
    connecting = nats.connect(
        args.server,
        user=user,
        password=args.key,
        inbox_prefix=f"_INBOX_{user}".encode(),
        connect_timeout=5,
        max_reconnect_attempts=0,
        allow_reconnect=False,
        error_cb=quiet,
    )
    try:
        # nats-py can keep trying a server that refuses connections: bound the whole attempt.
        nc = await asyncio.wait_for(connecting, timeout=10)
    except (OSError, NatsError, asyncio.TimeoutError) as err:
        why = str(err) or "nothing answered within 10 s"
        print(f"cannot connect to NATS at {args.server}: {why} (is the stack up? see the README)", file=sys.stderr)
        return 2
    try:
        if args.download:
            return await download(nc, headers, args.payload.encode(), args.download)
        reply = await nc.request(args.subject, args.payload.encode(), timeout=10, headers=headers)
    except (asyncio.TimeoutError, NatsError) as err:
        print(f"no answer from {args.subject or 'artifacts.component.archive'}: {err or type(err).__name__}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    code = (reply.headers or {}).get("Nats-Service-Error-Code")
    if code:
        print(f"Nats-Service-Error-Code: {code}", file=sys.stderr)
        print(f"Nats-Service-Error: {reply.headers.get('Nats-Service-Error')}", file=sys.stderr)
    print(reply.data.decode())
    return 1 if code else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
