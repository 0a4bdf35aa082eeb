from io import StringIO

from django.core.management import call_command
from portico_common.testing import APITestCase

from reading.models import Lesson, ReadingSession

QUICK_FOX = {"id": 3, "title": "The Quick Fox", "level": "A2", "word_count": 350, "duration_seconds": 600}
SESSION_10 = {
    "id": 10,
    "student_id": 1,
    "lesson_id": 3,
    "started_at": "2026-02-01T10:00:00Z",
    "words_per_minute": 112.5,
    "accuracy": 0.97,
}
NOT_FOUND = {"detail": "Not found."}
NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}


class SeededTestCase(APITestCase):
    @classmethod
    def setUpTestData(cls):
        call_command("seed", stdout=StringIO())


class HealthTests(APITestCase):
    def test_health(self):
        response = self.client.get("/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_unknown_url_is_json_404(self):
        for path in ["/lessons/", "/lesson", "/lesson/x/"]:
            response = self.client.get(path)
            self.assertEqual(response.status_code, 404, path)
            self.assertEqual(response.json(), NOT_FOUND, path)


class LessonTests(SeededTestCase):
    def test_detail_shape(self):
        response = self.client.get("/lesson/3/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), QUICK_FOX)

    def test_unknown_lesson_is_404(self):
        response = self.client.get("/lesson/99/")
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), NOT_FOUND)

    def test_list_is_paginated(self):
        body = self.client.get("/lesson/").json()
        self.assertEqual(list(body), ["count", "next", "previous", "results"])
        self.assertEqual(body["count"], 8)
        self.assertEqual([lesson["id"] for lesson in body["results"]], list(range(1, 9)))
        self.assertEqual(body["results"][2], QUICK_FOX)

    def test_page_size(self):
        body = self.client.get("/lesson/?page_size=3&page=3").json()
        self.assertEqual([lesson["id"] for lesson in body["results"]], [7, 8])
        self.assertIsNone(body["next"])
        self.assertEqual(body["previous"], "http://testserver/lesson/?page=2&page_size=3")

    def test_page_size_is_capped_at_500(self):
        Lesson.objects.bulk_create(
            Lesson(title=f"Extra {i}", level="A1", word_count=1, duration_seconds=1) for i in range(600)
        )
        body = self.client.get("/lesson/?page_size=501").json()
        self.assertEqual(body["count"], 608)
        self.assertEqual(len(body["results"]), 500)
        self.assertEqual(len(self.client.get("/lesson/").json()["results"]), 50)

    def test_invalid_page_is_404(self):
        self.assertEqual(self.client.get("/lesson/?page=3").status_code, 404)

    def test_ids_filter(self):
        body = self.client.get("/lesson/?ids=7,3,4,3,404").json()
        self.assertEqual(body["count"], 3)
        self.assertEqual(sorted(lesson["id"] for lesson in body["results"]), [3, 4, 7])

    def test_malformed_ids_is_400(self):
        response = self.client.get("/lesson/?ids=3,a")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"ids": ["Enter a comma-separated list of integers."]})

    def test_level_filter(self):
        body = self.client.get("/lesson/?level=B2").json()
        self.assertEqual([lesson["id"] for lesson in body["results"]], [7, 8])
        body = self.client.get("/lesson/?level=A2&ids=1,3").json()
        self.assertEqual([lesson["id"] for lesson in body["results"]], [3])

    def test_unknown_level_is_400(self):
        response = self.client.get("/lesson/?level=C1")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"level": ['"C1" is not a valid choice.']})


class SessionListTests(SeededTestCase):
    def test_student_id_is_required(self):
        response = self.client.get("/sessions/")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"student_id": ["This field is required."]})

    def test_student_id_must_be_an_integer(self):
        response = self.client.get("/sessions/?student_id=ada")
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"student_id": ["A valid integer is required."]})

    def test_sessions_of_a_student(self):
        body = self.client.get("/sessions/?student_id=1").json()
        self.assertEqual(body["count"], 3)
        self.assertEqual(body["results"][0], SESSION_10)
        self.assertEqual([s["lesson_id"] for s in body["results"]], [3, 4, 7])

    def test_student_without_sessions(self):
        body = self.client.get("/sessions/?student_id=5").json()
        self.assertEqual(body, {"count": 0, "next": None, "previous": None, "results": []})

    def test_pagination(self):
        body = self.client.get("/sessions/?student_id=3&page_size=2").json()
        self.assertEqual(body["count"], 3)
        self.assertEqual([s["id"] for s in body["results"]], [15, 16])
        self.assertEqual(body["next"], "http://testserver/sessions/?page=2&page_size=2&student_id=3")

    def test_ids_filter_within_student(self):
        body = self.client.get("/sessions/?student_id=1&ids=10,13").json()
        self.assertEqual([s["id"] for s in body["results"]], [10])


class SessionCreateTests(SeededTestCase):
    def test_create(self):
        response = self.client.post("/sessions/", {"lesson_id": 5}, format="json", headers={"X-User-Id": "2"})
        self.assertEqual(response.status_code, 201)
        body = response.json()
        self.assertEqual(body["id"], 19)
        self.assertEqual(body["student_id"], 2)
        self.assertEqual(body["lesson_id"], 5)
        self.assertEqual((body["words_per_minute"], body["accuracy"]), (0.0, 0.0))
        self.assertRegex(body["started_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(self.client.get("/sessions/?student_id=2").json()["count"], 3)

    def test_student_comes_from_header_not_body(self):
        response = self.client.post(
            "/sessions/", {"lesson_id": 1, "student_id": 4}, format="json", headers={"X-User-Id": "1"}
        )
        self.assertEqual(response.json()["student_id"], 1)

    def test_requires_user(self):
        for headers in [{}, {"X-User-Id": "nope"}]:
            response = self.client.post("/sessions/", {"lesson_id": 3}, format="json", headers=headers)
            self.assertEqual(response.status_code, 401, headers)
            self.assertEqual(response.json(), NO_CREDENTIALS)
        self.assertEqual(ReadingSession.objects.count(), 9)

    def test_unknown_lesson_is_400(self):
        response = self.client.post("/sessions/", {"lesson_id": 99}, format="json", headers={"X-User-Id": "1"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"lesson_id": ['Invalid pk "99" - object does not exist.']})

    def test_missing_lesson_is_400(self):
        response = self.client.post("/sessions/", {}, format="json", headers={"X-User-Id": "1"})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json(), {"lesson_id": ["This field is required."]})

    def test_malformed_json_is_400(self):
        response = self.client.post(
            "/sessions/", "{not json", content_type="application/json", headers={"X-User-Id": "1"}
        )
        self.assertEqual(response.status_code, 400)
        self.assertIn("detail", response.json())


class SeedTests(SeededTestCase):
    def test_seed_is_idempotent(self):
        before = (list(Lesson.objects.values()), list(ReadingSession.objects.values()))
        ReadingSession.objects.create(student_id=1, lesson_id=1)
        call_command("seed", stdout=StringIO())
        self.assertEqual((list(Lesson.objects.values()), list(ReadingSession.objects.values())), before)
        # The id sequence is reset too, so the next session is always 19.
        self.assertEqual(ReadingSession.objects.create(student_id=1, lesson_id=1).id, 19)
