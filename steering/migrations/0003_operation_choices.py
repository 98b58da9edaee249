# Operation kinds (layered drain) and statuses (paused weight ramps).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('steering', '0002_append_only_changes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='operation',
            name='kind',
            field=models.CharField(choices=[('drain', 'drain'), ('undrain', 'undrain'), ('maintenance', 'maintenance'), ('weight', 'weight'), ('announce', 'announce'), ('withdraw', 'withdraw'), ('layered_drain', 'layered drain')], max_length=16),
        ),
        migrations.AlterField(
            model_name='operation',
            name='status',
            field=models.CharField(choices=[('running', 'running'), ('paused', 'paused'), ('succeeded', 'succeeded'), ('aborted', 'aborted'), ('failed', 'failed')], default='running', max_length=16),
        ),
    ]
