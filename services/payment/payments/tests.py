from io import StringIO

from django.core.management import call_command
from portico_common.testing import APITestCase

from payments.models import Payment

PAYMENT_5 = {
    "id": 5,
    "student_id": 1,
    "amount": "49.00",
    "currency": "USD",
    "status": "succeeded",
    "created_at": "2026-02-03T12:00:00Z",
}
NOT_FOUND = {"detail": "Not found."}
NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
CHECKOUT = {"student_id": 1, "amount": "12.5", "currency": "USD"}


class SeededTestCase(APITestCase):
    @classmethod
    def setUpTestData(cls):
        call_command("seed", stdout=StringIO())

    def checkout(self, body=CHECKOUT, user="1", key="key-1"):
        headers = {}
        if user is not None:
            headers["X-User-Id"] = user
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post("/checkout/", body, format="json", headers=headers)


class HealthTests(APITestCase):
    def test_health(self):
        response = self.client.get("/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_unknown_url_is_json_404(self):
        for path in ["/payment/", "/payments", "/checkout"]:
            response = self.client.get(path)
            self.assertEqual(response.status_code, 404, path)
            self.assertEqual(response.json(), NOT_FOUND, path)

    def test_post_without_trailing_slash_is_404_not_500(self):
        response = self.client.post("/checkout", CHECKOUT, format="json")
        self.assertEqual(response.status_code, 404)


class PaymentReadTests(SeededTestCase):
    def test_detail_shape(self):
        response = self.client.get("/payments/5/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), PAYMENT_5)

    def test_unknown_payment_is_404(self):
        response = self.client.get("/payments/404/")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), NOT_FOUND)

    def test_student_id_is_required(self):
        response = self.client.get("/payments/")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"student_id": ["This field is required."]})

    def test_payments_of_a_student(self):
        body = self.client.get("/payments/?student_id=1").json()
        self.assertEqual(list(body), ["count", "next", "previous", "results"])
        self.assertEqual(body["count"], 2)
        self.assertEqual(body["results"][0], PAYMENT_5)
        self.assertEqual([p["amount"] for p in body["results"]], ["49.00", "19.99"])

    def test_student_without_payments(self):
        body = self.client.get("/payments/?student_id=5").json()
        self.assertEqual(body, {"count": 0, "next": None, "previous": None, "results": []})

    def test_pagination(self):
        body = self.client.get("/payments/?student_id=3&page_size=1&page=2").json()
        self.assertEqual(body["count"], 2)
        self.assertEqual([p["id"] for p in body["results"]], [3])
        self.assertIsNone(body["next"])
        self.assertEqual(self.client.get("/payments/?student_id=3&page=3&page_size=1").status_code, 404)

    def test_page_size_is_capped_at_500(self):
        Payment.objects.bulk_create(
            Payment(student_id=9, amount="1.00", currency="USD", payer_id=9, idempotency_key=f"bulk-{i}")
            for i in range(510)
        )
        body = self.client.get("/payments/?student_id=9&page_size=9999").json()
        self.assertEqual(body["count"], 510)
        self.assertEqual(len(body["results"]), 500)
        self.assertEqual(len(self.client.get("/payments/?student_id=9").json()["results"]), 50)

    def test_ids_filter(self):
        body = self.client.get("/payments/?student_id=1&ids=5,1,999").json()
        self.assertEqual([p["id"] for p in body["results"]], [5])
        response = self.client.get("/payments/?student_id=1&ids=five")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"ids": ["Enter a comma-separated list of integers."]})


class CheckoutTests(SeededTestCase):
    def test_checkout_creates_a_payment(self):
        response = self.checkout()
        self.assertEqual(response.status_code, 201)
        body = response.json()
        self.assertEqual(body["id"], 8)
        self.assertEqual(
            {k: body[k] for k in ("student_id", "amount", "currency", "status")},
            {"student_id": 1, "amount": "12.50", "currency": "USD", "status": "succeeded"},
        )
        self.assertRegex(body["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(self.client.get("/payments/8/").json(), body)

    def test_same_key_replays_without_creating(self):
        first = self.checkout()
        count = Payment.objects.count()
        again = self.checkout()
        self.assertEqual(again.status_code, 200)
        self.assertEqual(again.json(), first.json())
        # Even with another body, the stored payment is the answer.
        other = self.checkout(body={"student_id": 2, "amount": "1.00", "currency": "EUR"})
        self.assertEqual(other.status_code, 200)
        self.assertEqual(other.json(), first.json())
        self.assertEqual(Payment.objects.count(), count)

    def test_keys_are_scoped_per_user(self):
        first = self.checkout(user="1")
        second = self.checkout(user="2")
        self.assertEqual(second.status_code, 201)
        self.assertNotEqual(second.json()["id"], first.json()["id"])
        # A seeded payment's key replays for its own payer only.
        self.assertEqual(self.checkout(user="1", key="seed-5").json(), PAYMENT_5)

    def test_requires_user(self):
        for user in [None, "", "x", "0"]:
            response = self.checkout(user=user)
            self.assertEqual(response.status_code, 401, user)
            self.assertEqual(response.json(), NO_CREDENTIALS)
        self.assertEqual(Payment.objects.count(), 7)

    def test_requires_idempotency_key(self):
        for key in [None, "  "]:
            response = self.checkout(key=key)
            self.assertEqual(response.status_code, 400)
            self.assertEqual(response.json(), {"idempotency_key": ["This header is required."]})
        response = self.checkout(key="k" * 256)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(Payment.objects.count(), 7)

    def test_validation(self):
        cases = [
            ({"amount": "0"}, "amount", "Ensure this value is greater than or equal to 0.01."),
            ({"amount": "-5.00"}, "amount", "Ensure this value is greater than or equal to 0.01."),
            ({"amount": "1.001"}, "amount", "Ensure that there are no more than 2 decimal places."),
            ({"amount": "lots"}, "amount", "A valid number is required."),
            ({"currency": "usd"}, "currency", "Enter a 3-letter uppercase ISO 4217 currency code."),
            ({"currency": "USDX"}, "currency", "Enter a 3-letter uppercase ISO 4217 currency code."),
            ({"student_id": "one"}, "student_id", "A valid integer is required."),
        ]
        for change, field, message in cases:
            response = self.checkout(body={**CHECKOUT, **change}, key=f"bad-{field}-{change[field]}")
            self.assertEqual(response.status_code, 400, change)
            self.assertEqual(response.json(), {field: [message]}, change)
        response = self.checkout(body={})
        self.assertEqual(set(response.json()), {"student_id", "amount", "currency"})
        self.assertEqual(Payment.objects.count(), 7)

    def test_numeric_amount_is_served_as_string(self):
        response = self.checkout(body={**CHECKOUT, "amount": 49})
        self.assertEqual(response.json()["amount"], "49.00")


class SeedTests(SeededTestCase):
    def test_seed_is_idempotent(self):
        before = list(Payment.objects.values())
        self.checkout()
        call_command("seed", stdout=StringIO())
        self.assertEqual(list(Payment.objects.values()), before)
        self.assertEqual(self.checkout().json()["id"], 8)
