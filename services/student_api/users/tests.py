import os
import tempfile
from io import StringIO
from unittest import mock

from django.contrib.auth.hashers import check_password
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import override_settings
from portico_common.testing import APITestCase

from users.models import User

ADA = {
    "id": 1,
    "username": "ada",
    "email": "ada@example.com",
    "full_name": "Ada Lovelace",
    "grade": 5,
    "created_at": "2026-01-02T03:04:05Z",
}
NOT_FOUND = {"detail": "Not found."}
NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}


# The default PBKDF2 hasher is deliberately slow; tests need no such strength.
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
class UserApiTests(APITestCase):
    @classmethod
    def setUpTestData(cls):
        call_command("seed", stdout=StringIO())

    def test_health(self):
        response = self.client.get("/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})
        self.assertEqual(response["Content-Type"], "application/json")

    def test_user_detail_shape(self):
        response = self.client.get("/users/1/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), ADA)

    def test_unknown_user_is_404(self):
        response = self.client.get("/users/999/")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), NOT_FOUND)

    def test_unknown_url_is_json_404(self):
        for path in ["/nope/", "/users", "/users/abc/"]:
            response = self.client.get(path)
            self.assertEqual(response.status_code, 404, path)
            # Byte-identical to DRF's own 404s.
            self.assertEqual(response.content, b'{"detail":"Not found."}', path)

    def test_post_without_trailing_slash_is_404_not_500(self):
        response = self.client.post("/register", {"username": "x"}, format="json")
        self.assertEqual(response.status_code, 404)

    def test_list_is_paginated(self):
        response = self.client.get("/users/")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(list(body), ["count", "next", "previous", "results"])
        self.assertEqual(body["count"], 5)
        self.assertIsNone(body["next"])
        self.assertIsNone(body["previous"])
        self.assertEqual(body["results"][0], ADA)
        self.assertEqual([u["id"] for u in body["results"]], [1, 2, 3, 4, 5])

    def test_page_and_page_size(self):
        body = self.client.get("/users/?page=2&page_size=2").json()
        self.assertEqual(body["count"], 5)
        self.assertEqual([u["id"] for u in body["results"]], [3, 4])
        self.assertEqual(body["next"], "http://testserver/users/?page=3&page_size=2")
        self.assertEqual(body["previous"], "http://testserver/users/?page_size=2")

    def test_page_size_is_capped_at_500(self):
        User.objects.bulk_create(
            User(username=f"bulk{i}", email=f"bulk{i}@example.com", full_name="Bulk", grade=1, password="!")
            for i in range(520)
        )
        body = self.client.get("/users/?page_size=10000").json()
        self.assertEqual(body["count"], 525)
        self.assertEqual(len(body["results"]), 500)
        self.assertIsNotNone(body["next"])
        self.assertEqual(len(self.client.get("/users/").json()["results"]), 50)

    def test_invalid_page_is_404(self):
        self.assertEqual(self.client.get("/users/?page=99").status_code, 404)

    def test_ids_filter(self):
        body = self.client.get("/users/?ids=3,1,42").json()
        self.assertEqual(body["count"], 2)
        self.assertEqual(sorted(u["id"] for u in body["results"]), [1, 3])

    def test_malformed_ids_is_400(self):
        for value in ["a", "1,a", "1,,2", "-1"]:
            response = self.client.get("/users/", {"ids": value})
            self.assertEqual(response.status_code, 400, value)
            self.assertEqual(response.json(), {"ids": ["Enter a comma-separated list of integers."]})

    def test_search(self):
        for term, expected in [("ada", [1]), ("hopper", [3]), ("margaret@", [5]), ("zzz", [])]:
            body = self.client.get("/users/", {"search": term}).json()
            self.assertEqual([u["id"] for u in body["results"]], expected, term)

    def test_search_combines_with_ids(self):
        body = self.client.get("/users/", {"search": "a", "ids": "1,2"}).json()
        self.assertEqual([u["id"] for u in body["results"]], [1, 2])

    def test_register(self):
        payload = {
            "username": "katherine",
            "email": "katherine@example.com",
            "full_name": "Katherine Johnson",
            "grade": 8,
            "password": "s3cret-enough",
        }
        response = self.client.post("/register/", payload, format="json")
        self.assertEqual(response.status_code, 201)
        body = response.json()
        self.assertEqual(list(body), ["id", "username", "email", "full_name", "grade", "created_at"])
        self.assertEqual(body["id"], 6)  # seed leaves the sequence at its highest id
        self.assertRegex(body["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        user = User.objects.get(pk=6)
        self.assertNotEqual(user.password, "s3cret-enough")
        self.assertTrue(check_password("s3cret-enough", user.password))
        self.assertEqual(self.client.get("/users/6/").json(), body)

    def test_register_validation(self):
        valid = {
            "username": "newbie",
            "email": "newbie@example.com",
            "full_name": "New Bie",
            "grade": 4,
            "password": "long-enough",
        }
        cases = [
            ({"email": "not-an-email"}, "email", "Enter a valid email address."),
            ({"username": "ada"}, "username", "user with this username already exists."),
            ({"grade": 0}, "grade", "Ensure this value is greater than or equal to 1."),
            ({"grade": 13}, "grade", "Ensure this value is less than or equal to 12."),
            ({"grade": "five"}, "grade", "A valid integer is required."),
            ({"password": "short"}, "password", "Ensure this field has at least 8 characters."),
        ]
        for change, field, message in cases:
            response = self.client.post("/register/", {**valid, **change}, format="json")
            self.assertEqual(response.status_code, 400, change)
            self.assertEqual(response.json(), {field: [message]}, change)
        response = self.client.post("/register/", {}, format="json")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(set(response.json()), {"username", "email", "full_name", "grade", "password"})
        self.assertEqual(User.objects.count(), 5)

    def test_register_rejects_non_json(self):
        response = self.client.post("/register/", "username=x", content_type="application/x-www-form-urlencoded")
        self.assertEqual(response.status_code, 415)

    def test_profile(self):
        response = self.client.get("/profile/", headers={"X-User-Id": "1"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), ADA)

    def test_profile_speaks_the_preferred_language_and_remembers_it_in_a_cookie(self):
        cases = [("", "en"), ("de-CH, en;q=0.8", "de"), ("es, fr;q=0.5, de;q=0.4", "fr"), ("ja", "en"), ("de;q=x", "en")]
        for accept_language, expected in cases:
            headers = {"X-User-Id": "1", "Accept-Language": accept_language}
            response = self.client.get("/profile/", headers=headers)
            self.assertEqual(response.status_code, 200, accept_language)
            self.assertEqual(response["Content-Language"], expected, accept_language)
            self.assertEqual(response["Vary"], "Accept-Language")
            cookie = response.cookies["lang"]
            self.assertEqual(cookie.value, expected)
            self.assertEqual((cookie["path"], cookie["samesite"], cookie["max-age"]), ("/", "Lax", 31536000))

    def test_profile_requires_user(self):
        for headers in [{}, {"X-User-Id": ""}, {"X-User-Id": "abc"}, {"X-User-Id": "1.5"}, {"X-User-Id": "-1"}]:
            response = self.client.get("/profile/", headers=headers)
            self.assertEqual(response.status_code, 401, headers)
            self.assertEqual(response.json(), NO_CREDENTIALS, headers)

    def test_profile_of_unknown_user_is_404(self):
        response = self.client.get("/profile/", headers={"X-User-Id": "999"})
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), NOT_FOUND)

    def test_seed_is_idempotent(self):
        before = list(User.objects.values())
        call_command("seed", stdout=StringIO())
        self.assertEqual(list(User.objects.values()), before)


class ServerErrorTests(APITestCase):
    def test_unhandled_error_is_json_500_without_stack(self):
        self.client.raise_request_exception = False
        with mock.patch("users.views.UserDetail.get", side_effect=RuntimeError("boom")), self.assertLogs(
            "django.request", level="ERROR"
        ):
            response = self.client.get("/users/1/")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response.json(), {"detail": "A server error occurred."})


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class AvatarTests(APITestCase):
    @classmethod
    def setUpTestData(cls):
        call_command("seed", stdout=StringIO())

    def setUp(self):
        self.media = tempfile.TemporaryDirectory()
        self.addCleanup(self.media.cleanup)
        overridden = override_settings(MEDIA_ROOT=self.media.name)
        overridden.enable()
        self.addCleanup(overridden.disable)

    def upload(self, user_id, content, content_type="image/png", caller="1", name="me.png"):
        file = SimpleUploadedFile(name, content, content_type=content_type)
        headers = {"HTTP_X_USER_ID": caller} if caller else {}
        return self.client.post(f"/users/{user_id}/avatar/", {"avatar": file}, format="multipart", **headers)

    def test_upload_is_stored_and_served_back(self):
        response = self.upload(1, PNG)
        self.assertEqual(response.status_code, 201, response.content)
        body = response.json()
        self.assertEqual(body["user_id"], 1)
        self.assertEqual(body["url"], "http://testserver/users/1/avatar/")
        self.assertEqual(body["content_type"], "image/png")
        self.assertEqual(body["size"], len(PNG))
        stored = os.listdir(os.path.join(self.media.name, "avatars"))
        self.assertEqual(len(stored), 1)

        fetched = self.client.get("/users/1/avatar/")
        self.assertEqual(fetched.status_code, 200)
        self.assertEqual(fetched["Content-Type"], "image/png")
        self.assertEqual(b"".join(fetched.streaming_content), PNG)

    def test_a_new_upload_replaces_the_old_file(self):
        self.assertEqual(self.upload(1, PNG).status_code, 201)
        gif = b"GIF89a" + b"\x01" * 10
        self.assertEqual(self.upload(1, gif, "image/gif", name="me.gif").status_code, 201)
        self.assertEqual(len(os.listdir(os.path.join(self.media.name, "avatars"))), 1)
        self.assertEqual(b"".join(self.client.get("/users/1/avatar/").streaming_content), gif)

    def test_only_the_student_may_upload_their_avatar(self):
        self.assertEqual(self.upload(1, PNG, caller=None).status_code, 401)
        self.assertEqual(self.upload(1, PNG, caller="2").status_code, 403)
        self.assertEqual(self.upload(99, PNG, caller="99").status_code, 404)

    def test_not_an_image_or_too_large_is_refused(self):
        refused = self.upload(1, b"<script>", content_type="image/png")
        self.assertEqual(refused.status_code, 400)
        self.assertEqual(refused.json(), {"avatar": ["Upload a PNG, JPEG, GIF or WebP image."]})
        self.assertEqual(self.upload(1, PNG, content_type="text/html").status_code, 400)
        with override_settings(AVATAR_MAX_BYTES=10):
            self.assertEqual(self.upload(1, PNG).status_code, 413)
        missing = self.client.post("/users/1/avatar/", {}, format="multipart", HTTP_X_USER_ID="1")
        self.assertEqual(missing.status_code, 400)

    def test_no_avatar_is_404(self):
        self.assertEqual(self.client.get("/users/2/avatar/").status_code, 404)


from portico_common.test_signing import GatewaySignatureTests  # noqa: F401,E402
