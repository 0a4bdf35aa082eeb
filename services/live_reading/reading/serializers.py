from rest_framework import serializers

from portico_common.query import IdsQuery

from .models import Lesson, ReadingSession


class LessonSerializer(serializers.ModelSerializer):
    class Meta:
        model = Lesson
        fields = ["id", "title", "level", "word_count", "duration_seconds"]


class ReadingSessionSerializer(serializers.ModelSerializer):
    lesson_id = serializers.PrimaryKeyRelatedField(source="lesson", queryset=Lesson.objects.all())

    class Meta:
        model = ReadingSession
        fields = ["id", "student_id", "lesson_id", "started_at", "words_per_minute", "accuracy"]
        # A new session only names its lesson: the student comes from X-User-Id
        # and the reading metrics are measured later.
        read_only_fields = ["id", "student_id", "started_at", "words_per_minute", "accuracy"]


class LessonQuery(IdsQuery):
    level = serializers.ChoiceField(choices=Lesson.Level.choices, required=False)


class SessionQuery(IdsQuery):
    student_id = serializers.IntegerField(min_value=1)
