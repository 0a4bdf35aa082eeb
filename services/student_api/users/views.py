from django.conf import settings
from django.db import transaction
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from rest_framework import filters, generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from portico_common.identity import require_user_id
from portico_common.query import IdsFilterMixin

from .models import AVATAR_EXTENSIONS, Avatar, User
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


# What an accepted image's first bytes must be, by content type.
AVATAR_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


class PayloadTooLarge(ValidationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


def avatar_json(request, avatar):
    return {
        "user_id": avatar.user_id,
        "url": request.build_absolute_uri(f"/users/{avatar.user_id}/avatar/"),
        "content_type": avatar.content_type,
        "size": avatar.size,
        "updated_at": avatar.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class UserAvatar(APIView):
    """A student's avatar: multipart upload (field `avatar`) by that student, read by anyone."""

    parser_classes = [MultiPartParser]

    def get(self, request, pk):
        avatar = Avatar.objects.filter(user_id=pk).first()
        if avatar is None:
            raise NotFound()
        return FileResponse(avatar.image.open("rb"), content_type=avatar.content_type)

    def post(self, request, pk):
        caller = require_user_id(request)
        user = get_object_or_404(User, pk=pk)
        if caller != user.pk:
            raise PermissionDenied("You can only change your own avatar.")
        upload = request.FILES.get("avatar")
        if upload is None:
            raise ValidationError({"avatar": ["No file was submitted."]})
        if upload.size > settings.AVATAR_MAX_BYTES:
            raise PayloadTooLarge({"avatar": [f"The file is larger than {settings.AVATAR_MAX_BYTES} bytes."]})
        content_type = (upload.content_type or "").lower()
        head = upload.read(16)
        upload.seek(0)
        if content_type not in AVATAR_EXTENSIONS or not head.startswith(AVATAR_MAGIC[content_type]):
            raise ValidationError({"avatar": ["Upload a PNG, JPEG, GIF or WebP image."]})
        with transaction.atomic():
            previous = Avatar.objects.select_for_update().filter(user=user).first()
            old_file = previous.image.name if previous else None
            avatar = previous or Avatar(user=user)
            avatar.content_type = content_type
            avatar.size = upload.size
            avatar.updated_at = Avatar._meta.get_field("updated_at").default()
            avatar.image.save(upload.name or "avatar", upload, save=False)
            avatar.save()
        if old_file:
            avatar.image.storage.delete(old_file)
        return Response(avatar_json(request, avatar), status=status.HTTP_201_CREATED)
