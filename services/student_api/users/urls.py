from django.urls import path

from . import views

urlpatterns = [
    path("users/", views.UserList.as_view()),
    path("users/<int:pk>/", views.UserDetail.as_view()),
    path("users/<int:pk>/avatar/", views.UserAvatar.as_view()),
    path("register/", views.Register.as_view()),
    path("profile/", views.Profile.as_view()),
]
