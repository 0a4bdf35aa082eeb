from decimal import Decimal

from rest_framework import serializers

from portico_common.query import IdsQuery

from .models import Payment


class PaymentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = ["id", "student_id", "amount", "currency", "status", "created_at"]


class CheckoutSerializer(serializers.Serializer):
    student_id = serializers.IntegerField(min_value=1)
    amount = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=Decimal("0.01"))
    currency = serializers.RegexField(
        r"^[A-Z]{3}\Z",
        error_messages={"invalid": "Enter a 3-letter uppercase ISO 4217 currency code."},
    )


class PaymentQuery(IdsQuery):
    student_id = serializers.IntegerField(min_value=1)
