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
