"""The contract's one fixture: every connector and every test fake, by name (see ``subjects.py``)."""

from __future__ import annotations

import pytest

from tests.contract.subjects import SUBJECTS, Subject


@pytest.fixture(params=SUBJECTS, ids=[s.name for s in SUBJECTS])
def subject(request, make_sandbox, tmp_path) -> Subject:
    return request.param(make_sandbox, tmp_path)

