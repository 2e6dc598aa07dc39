"""Root conftest: the local-stack fixtures (devstack.pytest_plugin) for every test."""

pytest_plugins = ["devstack.pytest_plugin"]
