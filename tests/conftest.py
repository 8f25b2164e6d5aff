"""Shared fixtures.

make_ctx(workdir, **overrides) -> hotspot.hotspotApp.StepContext: the step context the
step tests run in, with the test module's CTX_DEFAULTS (template key -> value) updated by
`overrides` (keys as `**{"hotspot.tskm.metric": "dtw"}`, or with "__" for "." as
`hotspot__load__processor="mintpy"`).
"""
from pathlib import Path

import pytest

from hotspot.hotspotApp import StepContext
from hotspot.utils.template import config_from_dict


def step_context(workdir, defaults=None, **overrides):
    values = dict(defaults or {})
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return StepContext(workdir=Path(workdir), config=config_from_dict(values))


@pytest.fixture
def make_ctx(request):
    """Factory of StepContexts with the test module's CTX_DEFAULTS."""
    defaults = getattr(request.module, "CTX_DEFAULTS", {})

    def make(workdir, **overrides):
        return step_context(workdir, defaults, **overrides)
    return make
