"""Routing registries: Firestore (production), mounted files (production), memory (unit tests)."""

from .base import ReadOnlyRegistry, RoutingRegistry
from .files import FileRoutingRegistry
from .firestore import FirestoreRoutingRegistry
from .memory import InMemoryRoutingRegistry

__all__ = [
    "FileRoutingRegistry",
    "FirestoreRoutingRegistry",
    "InMemoryRoutingRegistry",
    "ReadOnlyRegistry",
    "RoutingRegistry",
]
