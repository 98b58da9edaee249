"""HealthEvent.seq: the prober's per-backend transition sequence, so a transition the recorder
delivers again (at least once, steering.health.outbox) is recognised and skipped."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('steering', '0007_change_token_and_chain'),
    ]

    operations = [
        migrations.AddField(
            model_name='healthevent',
            name='seq',
            field=models.BigIntegerField(blank=True, help_text="The prober's sequence number of this transition.", null=True),
        ),
        migrations.AddIndex(
            model_name='healthevent',
            index=models.Index(fields=['backend', 'seq'], name='steering_healthevent_seq'),
        ),
    ]
