from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler


class UserIdRequired(exceptions.APIException):
    # Not a NotAuthenticated subclass: DRF turns those into 403 when no
    # authentication class is configured, and the contract wants 401.
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Authentication credentials were not provided."
    default_code = "not_authenticated"


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        # DRF >= 3.15 would echo Django's "No Lesson matches the given query.".
        exc = exceptions.NotFound()
    return drf_exception_handler(exc, context)


# Django-level handlers (set in each urls.py) so that errors outside DRF views,
# e.g. an unknown URL, are JSON too.


def _json(detail, status_code):
    # Compact separators, byte-for-byte like DRF's JSONRenderer.
    return JsonResponse({"detail": detail}, status=status_code, json_dumps_params={"separators": (",", ":")})


def bad_request(request, exception=None):
    return _json("Bad request.", 400)


def permission_denied(request, exception=None):
    return _json("You do not have permission to perform this action.", 403)


def page_not_found(request, exception=None):
    return _json("Not found.", 404)


def server_error(request):
    return _json("A server error occurred.", 500)
