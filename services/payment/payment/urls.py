from django.urls import include, path

from portico_common.views import health

urlpatterns = [
    path("health/", health),
    path("", include("payments.urls")),
]

handler400 = "portico_common.exceptions.bad_request"
handler403 = "portico_common.exceptions.permission_denied"
handler404 = "portico_common.exceptions.page_not_found"
handler500 = "portico_common.exceptions.server_error"
