"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small models on a shared machine: more torch threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
