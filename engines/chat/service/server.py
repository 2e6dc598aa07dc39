"""The documented entry point of the engines app (DESIGN §6, §9).

``uvicorn --factory engines.chat.service.server:create_app`` is the serve command the chart and the
image run; the app itself is composed in :mod:`engines.app`.
"""

from engines.app import SERVICE_ROUTERS, StartupRefused, create_app

__all__ = ["SERVICE_ROUTERS", "StartupRefused", "create_app"]
