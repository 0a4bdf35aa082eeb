import django.db.models.deletion
from django.db import migrations, models

import portico_common.timeutils
import users.models


class Migration(migrations.Migration):
    dependencies = [("users", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="Avatar",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="avatar",
                        serialize=False,
                        to="users.user",
                    ),
                ),
                ("image", models.FileField(upload_to=users.models.avatar_path)),
                ("content_type", models.CharField(max_length=50)),
                ("size", models.PositiveIntegerField()),
                ("updated_at", models.DateTimeField(default=portico_common.timeutils.utc_now_seconds)),
            ],
        ),
    ]
