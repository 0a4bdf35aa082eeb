from django.db import models

from portico_common.timeutils import utc_now_seconds


class Payment(models.Model):
    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"

    # Students live in student_api, so these are plain ids, not foreign keys.
    student_id = models.PositiveIntegerField(db_index=True)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUCCEEDED)
    created_at = models.DateTimeField(default=utc_now_seconds)
    # Who called /checkout/ (X-User-Id) and with which Idempotency-Key: a key is
    # unique per caller, so two users can never replay each other's payments.
    payer_id = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=255)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["payer_id", "idempotency_key"], name="unique_idempotency_key_per_payer"),
        ]
