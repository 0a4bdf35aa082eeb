from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    """`?page=N&page_size=M`; a page_size above the maximum is capped, not rejected."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
