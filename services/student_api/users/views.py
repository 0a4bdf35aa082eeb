from django.shortcuts import get_object_or_404
from rest_framework import filters, generics
from rest_framework.response import Response
from rest_framework.views import APIView

from portico_common.identity import require_user_id
from portico_common.query import IdsFilterMixin

from .models import User
from .serializers import UserSerializer


class UserList(IdsFilterMixin, generics.ListAPIView):
    queryset = User.objects.all()
    serializer_class = UserSerializer
    filter_backends = [filters.SearchFilter]
    search_fields = ["username", "full_name", "email"]


class UserDetail(generics.RetrieveAPIView):
    queryset = User.objects.all()
    serializer_class = UserSerializer


class Register(generics.CreateAPIView):
    serializer_class = UserSerializer


# The languages the profile page is offered in; the first is the default.
PROFILE_LANGUAGES = ("en", "de", "fr")
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600


def preferred_language(accept_language: str) -> str:
    """The best of PROFILE_LANGUAGES for an `Accept-Language` header (RFC 9110 12.5.4)."""
    best, best_q = PROFILE_LANGUAGES[0], 0.0
    for item in accept_language.split(",")[:32]:
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary in PROFILE_LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


class Profile(APIView):
    def get(self, request):
        user = get_object_or_404(User, pk=require_user_id(request))
        language = preferred_language(request.headers.get("Accept-Language", ""))
        response = Response(UserSerializer(user).data)
        # The front end remembers the language the profile was shown in.
        response["Content-Language"] = language
        response["Vary"] = "Accept-Language"
        response.set_cookie("lang", language, max_age=LANGUAGE_COOKIE_MAX_AGE, samesite="Lax")
        return response
