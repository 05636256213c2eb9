"""pytest plugin for the suites that start services with pyharness: a failing
test's report carries what each service logged while that test ran.

    # conftest.py
    def pytest_configure(config):
        config.pluginmanager.register(AttachLogs(_SERVICES), "attach-logs")

`services` is the suite's name -> pyharness.Service dict, filled by its
fixtures; it is read at each test, so services started later are included.
"""

from __future__ import annotations

import pytest

import pyharness as ph

_OFFSETS = pytest.StashKey[dict]()


class AttachLogs:
    def __init__(self, services: dict[str, ph.Service]):
        self.services = services

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        # Session fixtures are up by now; remember where their logs end.
        item.stash[_OFFSETS] = ph.log_offsets(self.services)
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if report.when == "call" and report.failed:
            report.sections.extend(ph.log_sections(self.services, item.stash.get(_OFFSETS, {})))
        return report
