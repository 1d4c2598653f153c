import json
from pathlib import Path

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


# Timing varies on shared 2-core machines (and compiles happen on first use): no deadlines.
settings.register_profile("bayes_sd", deadline=None, max_examples=100)
settings.load_profile("bayes_sd")
