"""Tests of the gateway-signature middleware; imported by each service's tests."""

import time

from django.test import SimpleTestCase, override_settings

from .signing import sign

KEY = b"k1-secret-that-is-long-enough-0123456789"
OLD = b"k0-secret-that-is-long-enough-0123456789"
KEYS = "k1:k1-secret-that-is-long-enough-0123456789,k0:k0-secret-that-is-long-enough-0123456789"


@override_settings(PORTICO_SIGNING_KEYS=KEYS, PORTICO_SIGNATURE_MAX_AGE=60, PORTICO_SIGNATURE_SKEW=5)
class GatewaySignatureTests(SimpleTestCase):
    """Every service answers 401 JSON to identity it cannot trust; `/health/` is public."""

    path = "/health/"

    def get(self, headers):
        return self.client.get(self.path, headers=headers)

    def signed(self, key_id=b"k1", secret=KEY, created=None, identity=None, target=None, method="GET"):
        identity = identity if identity is not None else {"X-User-Id": "1"}
        created = int(time.time()) if created is None else created
        return {**identity, **sign(key_id.decode(), secret, method, target or self.path, identity, created)}

    def assert_refused(self, response):
        self.assertEqual(response.status_code, 401)
        self.assertTrue(response.json()["detail"].startswith("The identity was not signed by the gateway"))

    def test_no_identity_passes(self):
        self.assertEqual(self.get({}).status_code, 200)

    def test_unsigned_identity_is_refused(self):
        self.assert_refused(self.get({"X-User-Id": "1"}))
        self.assert_refused(self.get({"X-Api-Client": "partner"}))

    def test_valid_signatures_pass_with_either_key_of_a_rotation(self):
        self.assertEqual(self.get(self.signed()).status_code, 200)
        self.assertEqual(self.get(self.signed(key_id=b"k0", secret=OLD)).status_code, 200)

    def test_forged_signatures_are_refused(self):
        self.assert_refused(self.get(self.signed(secret=b"not-the-key-not-the-key-not-the-key")))
        self.assert_refused(self.get(self.signed(key_id=b"k9")))
        forged = self.signed()
        forged["X-User-Id"] = "2"
        self.assert_refused(self.get(forged))
        self.assert_refused(self.get(self.signed(target="/users/")))
        self.assert_refused(self.get(self.signed(method="POST")))
        self.assert_refused(self.get({**forged, "Signature": "portico=:garbage:"}))

    def test_identity_the_signature_does_not_cover_is_refused(self):
        signed = self.signed()
        signed["X-Api-Client"] = "partner"
        self.assert_refused(self.get(signed))

    def test_stale_and_future_signatures_are_refused(self):
        now = int(time.time())
        self.assert_refused(self.get(self.signed(created=now - 61)))
        self.assert_refused(self.get(self.signed(created=now + 30)))
        self.assertEqual(self.get(self.signed(created=now - 50)).status_code, 200)
        self.assertEqual(self.get(self.signed(created=now + 3)).status_code, 200, "within the skew")
