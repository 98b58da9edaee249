from django.apps import AppConfig


class SteeringConfig(AppConfig):
    name = "steering"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from steering.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
