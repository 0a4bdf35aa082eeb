"""Verifies that identity headers come from the gateway (RFC 9421 HTTP Message Signatures).

portico signs every backend request that carries identity (X-User-Id, forwarded
claims, X-Api-Client) with HMAC-SHA256 under the label `portico`, covering
`@method`, `@path`, `@query`, each identity header, `created` and `keyid`:

    Signature-Input: portico=("@method" "@path" "@query" "x-user-id");created=1700000000;keyid="k1"
    Signature: portico=:<base64 HMAC-SHA256 of the signature base>:

A request with any identity header must carry a valid signature by one of the
configured keys that covers every identity header it has, created at most
PORTICO_SIGNATURE_MAX_AGE seconds ago and not more than PORTICO_SIGNATURE_SKEW
seconds in the future; otherwise it gets 401 JSON. Requests without identity
headers (public endpoints, health checks) pass untouched.

The maintained `http-message-signatures` package would bring `cryptography`
and an adapter from Django requests to its request objects for this one HMAC
check of a fixed shape; this parser accepts only that shape, and compares with
`hmac.compare_digest`.
"""

import base64
import hashlib
import hmac
import os
import re
import time

from django.conf import settings
from django.http import JsonResponse

LABEL = "portico"
DEMO_KEYS = "demo:portico-demo-signing-key-change-me-0123456789"
DEFAULT_IDENTITY_HEADERS = ("x-user-id", "x-api-client")

# One dictionary member: portico=("a" "b");created=1;keyid="k1" (RFC 8941 inner
# list of strings with integer and string parameters), nothing else.
_INPUT = re.compile(
    r'^portico=\((?P<components>(?:"[a-z0-9@_.-]+" ?)*)\)'
    r'(?P<params>(?:;[a-z]+=(?:[0-9]{1,15}|"[A-Za-z0-9_.:-]{1,64}"))*)$'
)
_SIGNATURE = re.compile(r"^portico=:(?P<value>[A-Za-z0-9+/]{43}=):$")
_PARAM = re.compile(r';([a-z]+)=([0-9]+|"[^"]*")')


def keys_from_env(text: str) -> dict:
    """`id:secret` pairs separated by commas (PORTICO_SIGNING_KEYS) as {id: secret bytes}."""
    keys = {}
    for item in text.split(","):
        key_id, _, secret = item.strip().partition(":")
        if key_id and secret:
            keys[key_id] = secret.encode()
    return keys


def signing_keys() -> dict:
    return keys_from_env(getattr(settings, "PORTICO_SIGNING_KEYS", "") or os.environ.get("PORTICO_SIGNING_KEYS", DEMO_KEYS))


def _member(header: str) -> str:
    """The `portico=...` member of a dictionary header that may hold several signatures."""
    for member in header.split(","):
        member = member.strip()
        if member.startswith(LABEL + "="):
            return member
    return ""


def _path_and_query(request):
    # gunicorn keeps the target as received (RAW_URI); PATH_INFO is decoded.
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        path, _, query = raw.partition("?")
        return path, query
    return request.path, request.META.get("QUERY_STRING", "")


def signature_base(method: str, path: str, query: str, headers: list, params: str) -> bytes:
    """RFC 9421 §2.5 signature base for the covered components in order."""
    lines = [f'"@method": {method}', f'"@path": {path or "/"}', f'"@query": ?{query}']
    lines += [f'"{name}": {value}' for name, value in headers]
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines).encode()


def sign(key_id: str, secret: bytes, method: str, target: str, identity: dict, created: int) -> dict:
    """The headers portico would add, for tests and tools that call a service directly."""
    path, _, query = target.partition("?")
    names = [name.lower() for name in identity]
    components = " ".join(f'"{name}"' for name in ["@method", "@path", "@query", *names])
    params = f'({components});created={created};keyid="{key_id}"'
    values = [(name.lower(), str(value).strip()) for name, value in identity.items()]
    digest = hmac.new(secret, signature_base(method, path, query, values, params), hashlib.sha256).digest()
    return {
        "Signature-Input": f"{LABEL}={params}",
        "Signature": f"{LABEL}=:{base64.b64encode(digest).decode()}:",
    }


def _refusal(reason: str):
    return JsonResponse(
        {"detail": f"The identity was not signed by the gateway: {reason}."},
        status=401,
        json_dumps_params={"separators": (",", ":")},
    )


def verify(request, keys: dict, identity_headers, max_age: int, skew: int, now: float):
    """None when the request may pass, else the reason it may not."""
    present = [name for name in identity_headers if name in request.headers]
    if not present:
        return None
    signature_input = _INPUT.match(_member(request.headers.get("Signature-Input", "")))
    signature = _SIGNATURE.match(_member(request.headers.get("Signature", "")))
    if not signature_input or not signature:
        return "missing or malformed signature"
    components = re.findall(r'"([^"]+)"', signature_input["components"])
    params = dict(_PARAM.findall(signature_input["params"]))
    if components[:3] != ["@method", "@path", "@query"] or any(name not in components for name in present):
        return "the signature does not cover every identity header"
    if len(set(components)) != len(components) or len(params) != 2 or not {"created", "keyid"} <= params.keys():
        return "unexpected signature parameters"
    created, key_id = params["created"], params["keyid"]
    if not created.isdigit() or not key_id.startswith('"'):
        return "unexpected signature parameters"
    secret = keys.get(key_id.strip('"'))
    if secret is None:
        return "unknown key"
    age = now - int(created)
    if age > max_age:
        return "the signature is too old"
    if age < -skew:
        return "the signature is from the future"
    values = []
    for name in components[3:]:
        if name not in request.headers:
            return "a signed header is missing"
        values.append((name, request.headers[name].strip()))
    path, query = _path_and_query(request)
    params_text = signature_input.group(0)[len(LABEL) + 1 :]
    base = signature_base(request.method, path, query, values, params_text)
    expected = hmac.new(secret, base, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, base64.b64decode(signature["value"])):
        return "the signature does not match"
    return None


class GatewaySignatureMiddleware:
    """Refuses identity headers that portico did not sign (401 JSON)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        keys = signing_keys()
        identity_headers = [
            name.lower() for name in getattr(settings, "PORTICO_IDENTITY_HEADERS", DEFAULT_IDENTITY_HEADERS)
        ]
        max_age = int(getattr(settings, "PORTICO_SIGNATURE_MAX_AGE", 60))
        skew = int(getattr(settings, "PORTICO_SIGNATURE_SKEW", 5))
        reason = verify(request, keys, identity_headers, max_age, skew, time.time())
        if reason is not None:
            return _refusal(reason)
        return self.get_response(request)
