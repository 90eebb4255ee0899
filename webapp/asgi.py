"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from runs.consumers import RetryOnOutage  # noqa: E402
from runs.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # RetryOnOutage outside the auth stack: a session/user lookup that fails on a
        # database outage is a retryable close (1013), not a refused handshake
        "websocket": AllowedHostsOriginValidator(
            RetryOnOutage(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
