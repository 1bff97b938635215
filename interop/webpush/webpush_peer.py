#!/usr/bin/env python3
"""The independent WebPush implementation ugate is tested against (http_ece, py_vapid, pywebpush).

Every subcommand reads one JSON object on stdin and writes one JSON object on stdout; binary values
are base64url without padding. Used by Tests/PeerMeshTests/WebPushInteropTests.swift and by
`ugate push bench`. Requires: pip install http-ece py-vapid pywebpush
"""
import base64
import json
import sys
import time


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def ec_private(raw):
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def decrypt(req):
    """{"body","ua_private","auth"} -> {"plaintext"} or {"error"}"""
    import http_ece
    try:
        pt = http_ece.decrypt(b64d(req["body"]), private_key=ec_private(b64d(req["ua_private"])),
                              auth_secret=b64d(req["auth"]), version="aes128gcm")
        return {"plaintext": b64e(pt)}
    except Exception as e:  # noqa: BLE001 - report any refusal to the caller
        return {"error": repr(e)}


def encrypt(req):
    """{"plaintext","ua_public","auth","rs"?} -> {"body"} (random salt and sender key)"""
    import http_ece
    from cryptography.hazmat.primitives.asymmetric import ec
    body = http_ece.encrypt(b64d(req["plaintext"]), private_key=ec.generate_private_key(ec.SECP256R1()),
                            dh=b64d(req["ua_public"]), auth_secret=b64d(req["auth"]),
                            rs=req.get("rs", 4096), version="aes128gcm")
    return {"body": b64e(body)}


def vapid_verify(req):
    """{"authorization"} -> {"ok": bool, "claims"} using py_vapid's own verifier (Vapid02.verify)."""
    from py_vapid import Vapid02
    auth = req["authorization"]
    try:
        ok = bool(Vapid02.verify(auth))
    except Exception as e:  # noqa: BLE001 - a refusal is an answer
        return {"ok": False, "error": repr(e)}
    token = auth.rsplit(" ", 1)[1].split(",")[0].split("=", 1)[1]
    return {"ok": ok, "claims": json.loads(b64d(token.split(".")[1]))}


def vapid_sign(req):
    """{"private_key","claims"} -> {"authorization"} signed by py_vapid."""
    from py_vapid import Vapid02
    v = Vapid02.from_raw(req["private_key"].encode())
    headers = v.sign(req["claims"])
    return {"authorization": headers["Authorization"]}


def webpush_send(req):
    """{"subscription","data","vapid_private_key"?,"claims"?,"authorization"?,"ttl"?,"topic"?,"urgency"?}
    -> {"status","text","location"}: pywebpush.webpush(), or WebPusher.send() with a given Authorization."""
    from pywebpush import webpush, WebPushException
    from py_vapid import Vapid02
    kwargs = {"ttl": req.get("ttl", 60)}
    headers = {}
    if req.get("topic"):
        headers["Topic"] = req["topic"]
    if req.get("urgency"):
        headers["Urgency"] = req["urgency"]
    if headers:
        kwargs["headers"] = headers
    if req.get("vapid_private_key"):
        kwargs["vapid_private_key"] = Vapid02.from_raw(req["vapid_private_key"].encode())
        kwargs["vapid_claims"] = dict(req.get("claims") or {"sub": "mailto:ops@mesh.test"})
    try:
        if req.get("authorization"):
            # A hand-made VAPID header (e.g. an expired exp, which webpush() would silently renew).
            from pywebpush import WebPusher
            headers["Authorization"] = req["authorization"]
            r = WebPusher(req["subscription"]).send(b64d(req["data"]), headers, ttl=kwargs["ttl"])
            return {"status": r.status_code, "text": r.text, "location": r.headers.get("Location")}
        r = webpush(req["subscription"], b64d(req["data"]), **kwargs)
        return {"status": r.status_code, "text": r.text, "location": r.headers.get("Location")}
    except WebPushException as e:
        return {"status": e.response.status_code if e.response is not None else 0,
                "text": e.response.text if e.response is not None else str(e)}


def bench(req):
    """{"subscription","vapid_private_key","count","data"} -> {"seconds"}: pywebpush encrypt + VAPID sign, no POST."""
    from pywebpush import WebPusher
    from py_vapid import Vapid02
    v = Vapid02.from_raw(req["vapid_private_key"].encode())
    data = b64d(req["data"])
    claims = {"aud": req["aud"], "sub": "mailto:ops@mesh.test"}
    n = req["count"]
    start = time.perf_counter()
    for _ in range(n):
        WebPusher(req["subscription"]).encode(data, content_encoding="aes128gcm")
        claims["exp"] = int(time.time()) + 43200
        v.sign(claims)
    return {"seconds": time.perf_counter() - start}


COMMANDS = {"decrypt": decrypt, "encrypt": encrypt, "vapid-verify": vapid_verify, "vapid-sign": vapid_sign,
            "webpush": webpush_send, "bench": bench}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](json.load(sys.stdin))))
