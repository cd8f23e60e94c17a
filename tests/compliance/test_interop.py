"""The interop matrix (``interop.py``): lomond's three drivers against real servers.

One test per server runs every check that server supports through every
driver, and lists every failing cell. A server whose package is not
installed is skipped, saying so (aiohttp and tornado are not in the ``test``
extra). ``docs/report.md`` shows the same matrix, written by
``tests/compliance/report.py --interop``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import interop
import pytest


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[interop.Matrix]:
    with interop.Matrix(tmp_path_factory.mktemp("interop")) as running:
        yield running


@pytest.mark.parametrize("server", interop.SERVER_NAMES)
def test_every_check_through_every_driver(matrix: interop.Matrix, server: str) -> None:
    spec = interop.by_name(server)
    if not spec.available():
        pytest.skip(f"{spec.module} is not installed (pip install {spec.module} adds it)")
    cells = [
        matrix.run(server, check, driver)
        for check in interop.CHECK_NAMES if matrix.supports(server, check)
        for driver in interop.DRIVERS
    ]
    assert len(cells) >= len(interop.DRIVERS) * 7  # every server supports the core checks
    failed = [f"{c.check} ({c.driver}): {c.error}" for c in cells if c.error is not None]
    assert not failed, f"{spec.title} {spec.version()}:\n" + "\n".join(failed)


def test_the_checks_fail_when_they_should(matrix: interop.Matrix, tmp_path: Path) -> None:
    # A server that declines compression must fail the deflate check, and an
    # echo that never comes must fail the echo check: the matrix can say no.
    from lomond.testing import LocalServer

    spec = interop.by_check("deflate")
    with LocalServer(compress=False) as plain:
        found = interop._run_threaded(plain.url, {"proxies": {}, **spec.options}, spec)
    error = spec.verify(found)
    assert error is not None and "permessage-deflate not negotiated" in error

    echo = interop.by_check("echo")
    with LocalServer(lambda connection: connection.recv()) as silent:
        found = interop._run_threaded(silent.url, {"proxies": {}}, echo)
    assert echo.verify(found) == "echoed []"
