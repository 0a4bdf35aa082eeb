import uuid

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.db import models

from portico_common.timeutils import utc_now_seconds


class User(models.Model):
    """A student. Deliberately not django.contrib.auth's User: the gateway owns auth."""

    username = models.CharField(max_length=150, unique=True, validators=[UnicodeUsernameValidator()])
    email = models.EmailField()
    full_name = models.CharField(max_length=200)
    grade = models.PositiveSmallIntegerField()
    # A make_password() hash; never serialized.
    password = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=utc_now_seconds)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.username


def avatar_path(avatar, filename):
    """A fresh name per upload, so a replaced avatar is never served from a stale cache."""
    return f"avatars/{avatar.user_id}-{uuid.uuid4().hex}{AVATAR_EXTENSIONS[avatar.content_type]}"


# The image types accepted, by content type, with their file extension and
# the magic bytes their files start with.
AVATAR_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}


class Avatar(models.Model):
    """A student's avatar image, stored under MEDIA_ROOT."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, primary_key=True, related_name="avatar")
    image = models.FileField(upload_to=avatar_path)
    content_type = models.CharField(max_length=50)
    size = models.PositiveIntegerField()
    updated_at = models.DateTimeField(default=utc_now_seconds)
