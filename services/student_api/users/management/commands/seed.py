from datetime import datetime, timezone

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand
from django.db import transaction

from portico_common.seeding import replace_rows
from users.models import User

# (id, username, full_name, grade, created_at); email is <username>@example.com and
# the password is "<username>-password". Documented in services/README.md.
USERS = [
    (1, "ada", "Ada Lovelace", 5, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    (2, "alan", "Alan Turing", 7, datetime(2026, 1, 3, 9, 0, 0, tzinfo=timezone.utc)),
    (3, "grace", "Grace Hopper", 9, datetime(2026, 1, 4, 10, 30, 0, tzinfo=timezone.utc)),
    (4, "linus", "Linus Torvalds", 3, datetime(2026, 1, 5, 14, 0, 0, tzinfo=timezone.utc)),
    (5, "margaret", "Margaret Hamilton", 11, datetime(2026, 1, 6, 16, 45, 0, tzinfo=timezone.utc)),
]


class Command(BaseCommand):
    help = "Replace all users with the fixed sample data (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        rows = [
            User(
                id=pk,
                username=username,
                email=f"{username}@example.com",
                full_name=full_name,
                grade=grade,
                # A fixed salt keeps the stored hash identical across runs.
                password=make_password(f"{username}-password", salt=f"porticoseed{pk}"),
                created_at=created_at,
            )
            for pk, username, full_name, grade, created_at in USERS
        ]
        replace_rows(User, rows)
        self.stdout.write(f"Seeded {len(rows)} users.")
