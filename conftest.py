"""Root conftest: the local-stack fixtures (engines.devstack.pytest_plugin) for every test."""

pytest_plugins = ["engines.devstack.pytest_plugin"]
