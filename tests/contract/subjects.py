"""Every connector and every test fake the contract runs against. Adding a connector to the contract
= one :class:`~tests.contract.subject.Subject` (in ``sandboxed.py`` or ``local.py``) added to ``SUBJECTS``.

A case that cannot apply to a connector is named in the subject's ``lacks`` with the reason; the
contract reports that reason instead of running the case (see :func:`needs`).
"""

from __future__ import annotations

from tests.contract.local import CsvSubject, FakeCrmSubject, FakeEspSubject
from tests.contract.redtail_subject import RedtailSubject
from tests.contract.sandboxed import HubSpotSubject, MailchimpSubject
from tests.contract.subject import (  # noqa: F401 - what the cases import from here
    ARCHIVE,
    HTTP,
    INCREMENTAL,
    LIVE_SOURCE,
    MERGE,
    PARTIAL_FAILURE,
    PROP,
    RETRY_AFTER,
    TAG,
    WEBHOOKS,
    Subject,
    needs,
)
from tests.contract.wealthbox_subject import WealthboxSubject

SUBJECTS: list[type[Subject]] = [HubSpotSubject, MailchimpSubject, CsvSubject, FakeCrmSubject, FakeEspSubject,
                                 WealthboxSubject, RedtailSubject]
