"""Change rows name the token that acted and carry a hash chain; existing rows are chained in id order.

The append-only triggers refuse the backfill's UPDATEs (and SQLite drops them when it rebuilds the
table for these fields), so they are lifted first and put back last, with a SQLite trigger for the
new columns beside them (steering/models/audit_sql.py).
"""

import django.utils.timezone
from django.db import migrations, models

from steering.models import audit_sql
from steering.models.audit_chain import CHAINED_FIELDS, GENESIS, chain_hash

BACKFILL_PAGE = 1000


def lift_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(audit_sql.POSTGRES_DROP, params=None)
    elif vendor == "sqlite":
        for statement in [*audit_sql.SQLITE_DROP, *audit_sql.SQLITE_CHAIN_DROP]:
            schema_editor.execute(statement)


def restore_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(audit_sql.POSTGRES_CREATE, params=None)
    elif vendor == "sqlite":
        for statement in [*audit_sql.SQLITE_CREATE, *audit_sql.SQLITE_CHAIN_CREATE]:
            schema_editor.execute(statement)


def restore_0002_triggers(apps, schema_editor):
    """Going back: the triggers as 0002 left them (the chain's columns are gone again)."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(audit_sql.POSTGRES_CREATE, params=None)
    elif vendor == "sqlite":
        for statement in audit_sql.SQLITE_CREATE:
            schema_editor.execute(statement)


def chain_existing_rows(apps, schema_editor):
    Change = apps.get_model("steering", "Change")
    previous = GENESIS
    last_id = 0
    with schema_editor.connection.cursor() as cursor:
        while True:
            # Pages by id, not one open cursor: the same table is updated as it is read.
            page = list(
                Change.objects.filter(id__gt=last_id).order_by("id").values("id", *CHAINED_FIELDS)[:BACKFILL_PAGE]
            )
            if not page:
                return
            updates = []
            for row in page:
                row["prev_hash"] = previous
                previous = chain_hash(row)
                updates.append((row["prev_hash"], previous, row["id"]))
            cursor.executemany("UPDATE steering_change SET prev_hash = %s, hash = %s WHERE id = %s", updates)
            last_id = page[-1]["id"]


class Migration(migrations.Migration):
    dependencies = [
        ("steering", "0006_passive_health"),
    ]

    operations = [
        migrations.RunPython(lift_triggers, restore_0002_triggers),
        migrations.AddField(
            model_name="change",
            name="token_id",
            field=models.BigIntegerField(
                blank=True, help_text="The API token the actor used (none: a session, a command or the system).",
                null=True),
        ),
        migrations.AddField(
            model_name="change",
            name="token_name",
            field=models.CharField(blank=True, help_text="That token's name when it acted.", max_length=100),
        ),
        migrations.AddField(
            model_name="change",
            name="prev_hash",
            field=models.CharField(
                blank=True, help_text="The hash of the change before this one (empty for the first).", max_length=64),
        ),
        migrations.AddField(
            model_name="change",
            name="hash",
            field=models.CharField(blank=True, help_text="SHA-256 over this change's content and prev_hash.",
                                   max_length=64),
        ),
        migrations.AlterField(
            model_name="change",
            name="time",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.RunPython(chain_existing_rows, migrations.RunPython.noop),
        migrations.RunPython(restore_triggers, lift_triggers),
    ]
