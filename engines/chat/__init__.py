"""Chat: the message bus service, and the documented serve path of the engines app
(``chat.service.server``, which re-exports :mod:`engines.app`)."""
