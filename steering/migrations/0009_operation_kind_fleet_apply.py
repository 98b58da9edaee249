# Operation kind fleet_apply: a fleet file applied as one audited operation (steering.services.fleet).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('steering', '0008_healthevent_seq'),
    ]

    operations = [
        migrations.AlterField(
            model_name='operation',
            name='kind',
            field=models.CharField(choices=[('drain', 'drain'), ('undrain', 'undrain'), ('maintenance', 'maintenance'), ('weight', 'weight'), ('announce', 'announce'), ('withdraw', 'withdraw'), ('layered_drain', 'layered drain'), ('fleet_apply', 'fleet apply')], max_length=16),
        ),
    ]
