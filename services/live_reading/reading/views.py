from rest_framework import generics

from portico_common.identity import require_user_id
from portico_common.query import IdsFilterMixin

from .models import Lesson, ReadingSession
from .serializers import LessonQuery, LessonSerializer, ReadingSessionSerializer, SessionQuery


class LessonList(IdsFilterMixin, generics.ListAPIView):
    queryset = Lesson.objects.all()
    serializer_class = LessonSerializer
    query_serializer_class = LessonQuery

    def filter_by_query(self, queryset, params):
        if "level" in params:
            queryset = queryset.filter(level=params["level"])
        return queryset


class LessonDetail(generics.RetrieveAPIView):
    queryset = Lesson.objects.all()
    serializer_class = LessonSerializer


class SessionList(IdsFilterMixin, generics.ListCreateAPIView):
    queryset = ReadingSession.objects.all()
    serializer_class = ReadingSessionSerializer
    query_serializer_class = SessionQuery

    def filter_by_query(self, queryset, params):
        return queryset.filter(student_id=params["student_id"])

    def create(self, request, *args, **kwargs):
        # Identity is checked before the body is validated: 401 wins over 400.
        self.student_id = require_user_id(request)
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer):
        serializer.save(student_id=self.student_id)
