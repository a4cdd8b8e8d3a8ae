#!/usr/bin/env python3
"""Verifies a Cloakroom grant offline, with pyseto: verify.py TOKEN AUDIENCE [--redeem].

Prints the claims as JSON and exits 0, or says why not and exits 1. CLOAKROOM_URL says where
Cloakroom publishes its keys. Run by crates/server/tests/snippets.rs.

Offline verification checks the signature, the audience and the validity period. It cannot know
whether the grant was already used, nor whether it was revoked since: single use is Cloakroom's,
through POST /v1/grants/redeem (--redeem). Verify offline only where a replay within the grant's
lifetime (60 s by default) does no harm, or keep a replay cache of the `jti`s you have seen.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pyseto

BASE = os.environ.get("CLOAKROOM_URL", "")  # e.g. http://127.0.0.1:7878


def fetch_json(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    req = urllib.request.Request(BASE + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def verify(token, audience):
    # Cloakroom's keys, by PASERK id (computed here, not taken on trust). A service caches them
    # and fetches them again when a grant names a key it does not know.
    status, published = fetch_json("/v1/keys")
    if status != 200:
        raise ValueError(f"GET /v1/keys: {status}")
    keys = [pyseto.Key.from_paserk(k["paserk"]) for k in published["keys"]]
    by_id = {k.to_paserk_id(): k for k in keys}
    # The footer, {"kid":"k4.pid.…"}, names the signing key; the signature covers it.
    parts = token.split(".")
    if len(parts) != 4 or parts[:2] != ["v4", "public"]:
        raise ValueError("not a v4.public token with a footer")
    kid = json.loads(base64.urlsafe_b64decode(parts[3] + "=" * (-len(parts[3]) % 4)))["kid"]
    if kid not in by_id:
        raise ValueError("unknown signing key")
    # Cloakroom binds the audience into the signature as well as the `aud` claim. pyseto checks
    # `aud`, `exp` and `nbf` (with 5 s of clock skew; it reads the clock in whole seconds).
    paseto = pyseto.Paseto.new(leeway=5)
    assertion = f"cloakroom-grant:{audience}"
    decoded = paseto.decode(by_id[kid], token, assertion, deserializer=json, aud=audience)
    claims = decoded.payload
    if datetime.now(timezone.utc) >= datetime.fromisoformat(claims["exp"].replace("Z", "+00:00")):
        raise ValueError("expired")  # no skew on exp
    if claims.get("typ") != "cloakroom-grant":
        raise ValueError("not a grant")
    return claims


def main():
    args = sys.argv[1:]
    if len(args) not in (2, 3) or args[2:] not in ([], ["--redeem"]) or not BASE:
        sys.exit("usage: CLOAKROOM_URL=… verify.py TOKEN AUDIENCE [--redeem]")
    token, audience = args[0], args[1]
    try:
        claims = verify(token, audience)
        if args[2:] == ["--redeem"]:  # once only: a second redeem is a 409
            status, body = fetch_json("/v1/grants/redeem", {"token": token, "audience": audience})
            if status != 200:
                raise ValueError(f"redeem: {status} {body.get('error', {}).get('code')}")
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        sys.exit(f"grant refused: {e}")
    print(json.dumps(claims))


if __name__ == "__main__":
    main()
