"""Test helpers: a DRF test case whose client signs identity as the gateway does."""

import time

from rest_framework import test

from .signing import sign, signing_keys


class SigningAPIClient(test.APIClient):
    """Adds portico's signature (first configured key) to requests with identity headers."""

    def request(self, **environ):
        from django.conf import settings

        identity = {}
        for name in settings.PORTICO_IDENTITY_HEADERS:
            meta = "HTTP_" + name.upper().replace("-", "_")
            if meta in environ:
                identity[name] = environ[meta]
        if identity and "HTTP_SIGNATURE" not in environ:
            key_id, secret = next(iter(signing_keys().items()))
            query = environ.get("QUERY_STRING", "")
            target = environ["PATH_INFO"] + (f"?{query}" if query else "")
            signed = sign(key_id, secret, environ["REQUEST_METHOD"], target, identity, int(time.time()))
            environ["HTTP_SIGNATURE_INPUT"] = signed["Signature-Input"]
            environ["HTTP_SIGNATURE"] = signed["Signature"]
        return super().request(**environ)


class APITestCase(test.APITestCase):
    """The services' tests call them as the gateway would: identity signed."""

    client_class = SigningAPIClient
