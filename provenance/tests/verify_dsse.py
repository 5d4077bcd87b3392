"""An independent DSSE verifier: written from the DSSE specification (protocol.md, envelope.md) with Python's
`cryptography` package, sharing no code with the Rust crate it checks.

    python3 verify_dsse.py ENVELOPE.json PUBLIC_KEY.pem

Exit 0 and print {"keyid", "payloadType", "payload"} (the payload decoded as JSON) when a signature by the
key verifies over PAE(payloadType, payload); exit 1 and say why on stderr otherwise; exit 2 on bad usage.
"""

import base64
import binascii
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes as ASCII decimal."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (DSSE allows either)."""
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        return base64.b64decode(padded, altchars=b"-_", validate=True)


def fail(reason: str) -> None:
    print(reason, file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], "rb") as f:
        envelope = json.load(f)
    with open(sys.argv[2], "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    keyid = hashlib.sha256(spki).hexdigest()

    payload_type = envelope["payloadType"]
    try:
        payload = b64decode(envelope["payload"])
    except (binascii.Error, ValueError) as error:
        fail(f"the payload is not base64: {error}")
    message = pae(payload_type, payload)

    candidates = [s for s in envelope.get("signatures", []) if not s.get("keyid") or s["keyid"] == keyid]
    if not candidates:
        fail(f"no signature by key {keyid}")
    for signature in candidates:
        try:
            sig = b64decode(signature["sig"])
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(sig, message)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
            else:
                fail(f"unsupported key type {type(key).__name__}")
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        json.dump({"keyid": keyid, "payloadType": payload_type, "payload": json.loads(payload)}, sys.stdout)
        return
    fail(f"the signature by key {keyid} does not verify")


main()
