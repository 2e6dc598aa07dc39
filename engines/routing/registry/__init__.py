"""Routing registries: Firestore (production), mounted files (production), memory (unit tests)."""

from .base import ReadOnlyRegistry, RoutingRegistry
from .files import FileRoutingRegistry
from .firestore import DEFAULT_COLLECTION, FirestoreRoutingRegistry
from .memory import InMemoryRoutingRegistry

__all__ = [
    "DEFAULT_COLLECTION",
    "FileRoutingRegistry",
    "FirestoreRoutingRegistry",
    "InMemoryRoutingRegistry",
    "ReadOnlyRegistry",
    "RoutingRegistry",
]
