"""Verifies a Tidings delivery's signatures with implementations independent of Tidings.

Reads {"secret", "body_b64", "headers"} as JSON on stdin. Checks X-Hub-Signature with Python's hmac and the
Standard Webhooks headers with the official `standardwebhooks` package. Exits 0 when both verify, or, with
"standard_only": true, when the Standard Webhooks signature does.
"""
import base64
import hashlib
import hmac
import json
import sys

from standardwebhooks.webhooks import Webhook

case = json.load(sys.stdin)
secret = case["secret"]
body = base64.b64decode(case["body_b64"])
headers = {k.lower(): v for k, v in case["headers"].items()}

expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
if not case.get("standard_only") and not hmac.compare_digest(expected, headers.get("x-hub-signature", "")):
    sys.exit(f"X-Hub-Signature mismatch: expected {expected}, got {headers.get('x-hub-signature')}")

try:
    Webhook(secret).verify(body, headers)
except json.JSONDecodeError:
    # verify() checks the signature first and then parses the payload as JSON; a non-JSON body that gets this
    # far has a valid signature.
    pass
print("ok")
