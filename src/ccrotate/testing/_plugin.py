"""pytest plugin of ccrotate.testing, auto-loaded through the ``pytest11`` entry point.

Its import stays light (pytest only): everything else loads inside the fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ccrotate.testing import FakeUpstream, ServerHandle


@pytest.fixture
def fake_upstream() -> FakeUpstream:
    """A fresh :class:`~ccrotate.testing.FakeUpstream` (an ASGI app, not served)."""
    from ccrotate.testing import FakeUpstream

    return FakeUpstream()


@pytest.fixture
def fake_upstream_server(fake_upstream: FakeUpstream) -> Iterator[ServerHandle[FakeUpstream]]:
    """``fake_upstream`` served on 127.0.0.1: ``.url`` to call, ``.app`` to script it."""
    from ccrotate.testing import serve_app

    with serve_app(fake_upstream) as handle:
        yield handle
