from django.urls import path

from . import views

urlpatterns = [
    path("payments/", views.PaymentList.as_view()),
    path("payments/<int:pk>/", views.PaymentDetail.as_view()),
    path("checkout/", views.Checkout.as_view()),
]
