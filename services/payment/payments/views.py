from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from portico_common.identity import require_user_id
from portico_common.query import IdsFilterMixin

from .models import Payment
from .serializers import CheckoutSerializer, PaymentQuery, PaymentSerializer

IDEMPOTENCY_KEY_MAX_LENGTH = Payment._meta.get_field("idempotency_key").max_length


class PaymentList(IdsFilterMixin, generics.ListAPIView):
    queryset = Payment.objects.all()
    serializer_class = PaymentSerializer
    query_serializer_class = PaymentQuery

    def filter_by_query(self, queryset, params):
        return queryset.filter(student_id=params["student_id"])


class PaymentDetail(generics.RetrieveAPIView):
    queryset = Payment.objects.all()
    serializer_class = PaymentSerializer


def idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise ValidationError({"idempotency_key": ["This header is required."]})
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValidationError(
            {"idempotency_key": [f"Ensure this header has no more than {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}
        )
    return key


class Checkout(APIView):
    """Charge once per (X-User-Id, Idempotency-Key).

    The first request with a key creates the payment (201). Any later request
    with the same key, whatever its body, answers the stored payment (200) and
    creates nothing; the body is still validated first.
    """

    def post(self, request):
        payer_id = require_user_id(request)
        key = idempotency_key(request)
        checkout = CheckoutSerializer(data=request.data)
        checkout.is_valid(raise_exception=True)
        # get_or_create also covers two concurrent first requests: the loser
        # hits the unique constraint and reads the winner's row.
        payment, created = Payment.objects.get_or_create(
            payer_id=payer_id,
            idempotency_key=key,
            defaults={**checkout.validated_data, "status": Payment.Status.SUCCEEDED},
        )
        return Response(
            PaymentSerializer(payment).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
