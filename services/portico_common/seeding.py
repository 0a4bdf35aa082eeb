from django.core.management.color import no_style
from django.db import connection


def replace_rows(model, rows):
    """Wipe `model`'s table and insert `rows` (with explicit ids).

    Sequences are reset so that the next created row gets max(id) + 1 on every
    run, which keeps seeding idempotent even after objects were created.
    """
    model.objects.all().delete()
    with connection.cursor() as cursor:
        table = model._meta.db_table
        for sql in connection.ops.sql_flush(no_style(), [table], reset_sequences=True):
            cursor.execute(sql)
        model.objects.bulk_create(rows)
        for sql in connection.ops.sequence_reset_sql(no_style(), [model]):
            cursor.execute(sql)
