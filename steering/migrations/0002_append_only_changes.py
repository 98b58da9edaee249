"""Make steering_change append-only in the database itself; seed the state version and role groups."""

from django.db import migrations

from steering.models import audit_sql


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(audit_sql.POSTGRES_CREATE, params=None)
    elif vendor == "sqlite":
        for statement in audit_sql.SQLITE_CREATE:
            schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(audit_sql.POSTGRES_DROP, params=None)
    elif vendor == "sqlite":
        for statement in audit_sql.SQLITE_DROP:
            schema_editor.execute(statement)


def seed(apps, schema_editor):
    apps.get_model("steering", "StateVersion").objects.get_or_create(pk=1, defaults={"value": 0})
    Group = apps.get_model("auth", "Group")
    for name in ("viewer", "operator", "admin"):
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("steering", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_triggers, drop_triggers),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
