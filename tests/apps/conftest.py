"""What the application tests share beyond tests/conftest.py."""
from __future__ import annotations

import pytest


@pytest.fixture()
def running():
    """Services (inspector.service.Service) a test started; stopped at its end whatever happened."""
    services: list = []
    yield services
    for service in services:
        service.stop(drain=False, flush_timeout=0)
