from datetime import datetime, timezone
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from payments.models import Payment
from portico_common.seeding import replace_rows


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


# (id, student_id, amount, currency, created_at); all "succeeded", paid by the
# student themself with Idempotency-Key "seed-<id>". Student 5 has none.
# Documented in services/README.md.
PAYMENTS = [
    (1, 2, "25.00", "USD", utc(2026, 1, 20, 9, 0, 0)),
    (2, 3, "120.00", "EUR", utc(2026, 1, 22, 14, 15, 0)),
    (3, 3, "15.50", "EUR", utc(2026, 1, 28, 18, 5, 0)),
    (4, 4, "9.99", "GBP", utc(2026, 1, 30, 11, 0, 0)),
    (5, 1, "49.00", "USD", utc(2026, 2, 3, 12, 0, 0)),
    (6, 1, "19.99", "USD", utc(2026, 2, 10, 8, 30, 0)),
    (7, 2, "49.00", "USD", utc(2026, 2, 12, 15, 0, 0)),
]


class Command(BaseCommand):
    help = "Replace all payments with the fixed sample data (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        rows = [
            Payment(
                id=pk,
                student_id=student_id,
                amount=Decimal(amount),
                currency=currency,
                status=Payment.Status.SUCCEEDED,
                created_at=created_at,
                payer_id=student_id,
                idempotency_key=f"seed-{pk}",
            )
            for pk, student_id, amount, currency, created_at in PAYMENTS
        ]
        replace_rows(Payment, rows)
        self.stdout.write(f"Seeded {len(rows)} payments.")
