"""The dojoc pytest plugin (registered through the `pytest11` entry point): a `--dojo-machine` option
and a `dojo_machine` fixture holding its value (default "mesh4x4"), for emulator-backed unit tests:

    def test_my_block(dojo_machine):
        assert_matches_eager(MyBlock().eval(), torch.randn(2, 8), machine=dojo_machine)
"""

from __future__ import annotations

import pytest

DEFAULT_MACHINE = "mesh4x4"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dojoc", "dojoc emulator-backed tests")
    group.addoption("--dojo-machine", action="store", default=DEFAULT_MACHINE, metavar="NAME|file.toml",
                    help=f"machine for the dojo_machine fixture (a preset or a .toml; default {DEFAULT_MACHINE})")


@pytest.fixture
def dojo_machine(request: pytest.FixtureRequest) -> str:
    """The machine given by --dojo-machine (default "mesh4x4")."""
    return str(request.config.getoption("--dojo-machine"))
