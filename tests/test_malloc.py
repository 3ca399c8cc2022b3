"""The environment of the proxies we start: glibc's malloc asks for huge pages there."""

from __future__ import annotations

import sys

import pytest

from asylo._malloc import with_huge_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings apply on Linux")


def test_with_huge_pages_adds_the_tunable_and_changes_nothing_else() -> None:
    environ = {"PATH": "/usr/bin", "HOME": "/home/x"}
    env = with_huge_pages(environ)
    assert env is not None and env == {**environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert "GLIBC_TUNABLES" not in environ  # a copy: the caller's mapping (os.environ, say) is left alone


def test_with_huge_pages_keeps_tunables_already_set() -> None:
    env = with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env is not None and env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_with_huge_pages_leaves_a_hugetlb_setting_of_the_users_alone() -> None:
    # None: the child inherits the environment as it is.
    assert with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"}) is None
