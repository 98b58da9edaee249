"""ASGI entry point: HTTP through Django, WebSocket through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from steering.startup import refuse_unsafe_start  # noqa: E402

refuse_unsafe_start("web")

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from steering.api.longpoll import DesiredStateApp  # noqa: E402
from steering.api.operation_wait import OperationWaitApp  # noqa: E402
from steering.live.origin import SameOriginValidator  # noqa: E402
from steering.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Long-polls (agents' desired state, `?wait=` on an operation) are answered beside Django's
        # sync stack: a waiter holds no thread and no database connection.
        "http": DesiredStateApp(OperationWaitApp(django_asgi_app)),
        # Same origin (scheme, host and port) or a CSRF_TRUSTED_ORIGINS entry; then the session.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

from steering.gcpolicy import settle_web_process  # noqa: E402

settle_web_process()
