"""The examples in the library's docstrings run, with the default model, and print what they say."""
from __future__ import annotations

import doctest

import pytest

import nczip.api
import nczip.ncfile

pytestmark = pytest.mark.real_model


@pytest.mark.parametrize("module", [nczip.api, nczip.ncfile], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
