"""Root conftest: lets `pytest evals/` run from a source checkout that was not pip-installed.

An installed pytest-steer is registered through its `pytest11` entry point before conftest files
load; without the install, pytest puts this folder on sys.path and this file registers the plugin.
"""

import sys

if "pytest_steer.plugin" not in sys.modules:
    pytest_plugins = ["pytest_steer.plugin"]
