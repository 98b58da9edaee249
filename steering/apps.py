from django.apps import AppConfig


class SteeringConfig(AppConfig):
    name = "steering"
    default_auto_field = "django.db.models.BigAutoField"
