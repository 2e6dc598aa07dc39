"""Chat: the message bus service and the engines app entry point (``chat.service.server``)."""
