#!/usr/bin/env python3
"""make_sas.py - prints an account SAS (blob service, 2 hours) for ACCOUNT signed with KEY_B64, as
the portal would give it; used by integration tests to drive SAS authorization against Azurite."""
import base64, datetime, hashlib, hmac, sys, urllib.parse

account, key = sys.argv[1], base64.b64decode(sys.argv[2])
version, perms, services, types, proto = "2021-08-06", "racwdlup", "b", "sco", "https"
expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
# Account SAS string-to-sign (2020-12-06 and later): the fields, the encryption scope, a final newline.
sts = "\n".join([account, perms, services, types, "", expiry, "", proto, version, "", ""])
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
q = [("sv", version), ("ss", services), ("srt", types), ("sp", perms), ("se", expiry), ("spr", proto), ("sig", sig)]
print("&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in q))
