"""The routing operator: reconciles RoutingEntry objects into Firestore and ConfigMaps.

Import name ``routing_operator`` (the folder is ``operator/``; a package named ``operator`` would
shadow the standard library). Entry point: the ``routing-operator`` console script.
"""

__all__: list[str] = []
