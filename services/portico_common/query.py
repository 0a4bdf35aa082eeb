"""Validation of query parameters with DRF serializers, so errors are DRF field errors."""

from rest_framework import serializers


class IdListField(serializers.Field):
    """`?ids=1,2,3` as a list of ints; a blank value is an empty list."""

    default_error_messages = {"invalid": "Enter a comma-separated list of integers."}

    def to_internal_value(self, data):
        parts = [part.strip() for part in str(data).split(",")]
        if parts == [""]:
            return []
        if not all(part.isascii() and part.isdigit() for part in parts):
            self.fail("invalid")
        return [int(part) for part in parts]


def validate_query(request, serializer_class) -> dict:
    """Validated query parameters, or a 400 with field errors."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class IdsQuery(serializers.Serializer):
    ids = IdListField(required=False)


class IdsFilterMixin:
    """Batch reads for list views: `?ids=` keeps only those objects."""

    query_serializer_class = IdsQuery

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        params = validate_query(self.request, self.query_serializer_class)
        if "ids" in params:
            queryset = queryset.filter(pk__in=params["ids"])
        return self.filter_by_query(queryset, params)

    def filter_by_query(self, queryset, params):
        """Hook for a view's other query parameters (already validated)."""
        return queryset
