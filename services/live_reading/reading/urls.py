from django.urls import path

from . import views

urlpatterns = [
    path("lesson/", views.LessonList.as_view()),
    path("lesson/<int:pk>/", views.LessonDetail.as_view()),
    path("sessions/", views.SessionList.as_view()),
]
