from django.db import models

from portico_common.timeutils import utc_now_seconds


class Lesson(models.Model):
    class Level(models.TextChoices):
        A1 = "A1"
        A2 = "A2"
        B1 = "B1"
        B2 = "B2"

    title = models.CharField(max_length=200)
    level = models.CharField(max_length=2, choices=Level.choices)
    word_count = models.PositiveIntegerField()
    duration_seconds = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.title


class ReadingSession(models.Model):
    # Students live in student_api, so this is a plain id, not a foreign key.
    student_id = models.PositiveIntegerField(db_index=True)
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="sessions")
    started_at = models.DateTimeField(default=utc_now_seconds)
    words_per_minute = models.FloatField(default=0.0)
    accuracy = models.FloatField(default=0.0)

    class Meta:
        ordering = ["id"]
