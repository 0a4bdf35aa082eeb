from datetime import datetime, timezone

from django.core.management.base import BaseCommand
from django.db import transaction

from portico_common.seeding import replace_rows
from reading.models import Lesson, ReadingSession

# (id, title, level, word_count, duration_seconds). Documented in services/README.md.
LESSONS = [
    (1, "Hello, World", "A1", 120, 300),
    (2, "The Red Kite", "A1", 180, 360),
    (3, "The Quick Fox", "A2", 350, 600),
    (4, "A Day at the Market", "A2", 420, 720),
    (5, "The Lighthouse Keeper", "B1", 640, 900),
    (6, "Rivers of Ice", "B1", 700, 960),
    (7, "The Clockmaker's Apprentice", "B2", 980, 1200),
    (8, "Voices from the Deep", "B2", 1100, 1380),
]


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


# (id, student_id, lesson_id, started_at, words_per_minute, accuracy).
# Student 5 deliberately has no sessions.
SESSIONS = [
    (10, 1, 3, utc(2026, 2, 1, 10, 0, 0), 112.5, 0.97),
    (11, 1, 4, utc(2026, 2, 2, 10, 15, 0), 118.0, 0.95),
    (12, 1, 7, utc(2026, 2, 4, 16, 30, 0), 96.25, 0.9),
    (13, 2, 1, utc(2026, 2, 1, 9, 0, 0), 140.0, 0.99),
    (14, 2, 5, utc(2026, 2, 3, 11, 45, 0), 121.75, 0.93),
    (15, 3, 2, utc(2026, 2, 2, 8, 30, 0), 88.0, 0.91),
    (16, 3, 6, utc(2026, 2, 5, 13, 0, 0), 102.5, 0.94),
    (17, 3, 8, utc(2026, 2, 6, 17, 20, 0), 99.0, 0.89),
    (18, 4, 1, utc(2026, 2, 7, 7, 50, 0), 64.5, 0.82),
]


class Command(BaseCommand):
    help = "Replace all lessons and reading sessions with the fixed sample data (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        # Sessions first: deleting lessons would cascade to them anyway.
        replace_rows(ReadingSession, [])
        replace_rows(
            Lesson,
            [
                Lesson(id=pk, title=title, level=level, word_count=words, duration_seconds=seconds)
                for pk, title, level, words, seconds in LESSONS
            ],
        )
        replace_rows(
            ReadingSession,
            [
                ReadingSession(
                    id=pk,
                    student_id=student_id,
                    lesson_id=lesson_id,
                    started_at=started_at,
                    words_per_minute=wpm,
                    accuracy=accuracy,
                )
                for pk, student_id, lesson_id, started_at, wpm, accuracy in SESSIONS
            ],
        )
        self.stdout.write(f"Seeded {len(LESSONS)} lessons and {len(SESSIONS)} reading sessions.")
