"""The package's metadata says what it is: MIT, the Pythons it runs on, where it lives.

Building the sdist and the wheel and `twine check --strict` on them run in `.ci/run`;
these read pyproject.toml and LICENSE only, so they need neither the network nor a build.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
LICENSE = ROOT / "LICENSE"
PY_TYPED = ROOT / "watchers" / "py.typed"
PYTHONS = ("3.11", "3.12")
URLS = ("Homepage", "Documentation", "Issues", "Changelog")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


PROJECT = pyproject()["project"]
CLASSIFIERS: list[str] = PROJECT.get("classifiers", [])


def test_the_license_is_the_spdx_expression_mit():
    """`license` is the plain string "MIT", not the deprecated table, and names its file."""
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_the_build_backend_understands_spdx_licenses():
    """setuptools 77 is the first to read `license` as an SPDX expression."""
    (setuptools,) = [
        Requirement(r)
        for r in pyproject()["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    ]
    assert not setuptools.specifier.contains("76.1"), setuptools
    assert setuptools.specifier.contains("77.0"), setuptools


def test_the_license_file_is_the_mit_license():
    """LICENSE holds the MIT text and the authors' copyright."""
    text = LICENSE.read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The kanban-watchers authors" in text
    flat = " ".join(text.split())
    assert "Permission is hereby granted, free of charge, to any person" in flat
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in flat


def test_no_license_classifier_beside_the_expression():
    """With an SPDX expression a `License ::` classifier is refused by setuptools and PyPI."""
    assert not [c for c in CLASSIFIERS if c.startswith("License ::")]


def test_the_classifiers_name_the_supported_pythons():
    """Python 3 and each supported minor release, all allowed by `requires-python`."""
    assert "Programming Language :: Python :: 3" in CLASSIFIERS
    for version in PYTHONS:
        assert f"Programming Language :: Python :: {version}" in CLASSIFIERS, version
    allowed = SpecifierSet(PROJECT["requires-python"])
    named = [
        m.group(1)
        for c in CLASSIFIERS
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    ]
    assert named and all(allowed.contains(v) for v in named), (named, allowed)


def test_the_classifiers_say_it_is_a_linux_monitoring_daemon():
    """Who it is for and what it does, as the index's filters see it."""
    for classifier in (
        "Environment :: No Input/Output (Daemon)",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Monitoring",
    ):
        assert classifier in CLASSIFIERS, classifier
    assert any(c.startswith("Development Status :: ") for c in CLASSIFIERS)
    assert len(set(CLASSIFIERS)) == len(CLASSIFIERS)


def test_typed_is_only_claimed_with_its_marker():
    """`Typing :: Typed` promises a PEP 561 `py.typed` in the package."""
    if "Typing :: Typed" not in CLASSIFIERS:
        return
    if not PY_TYPED.exists():
        pytest.skip("watchers/py.typed is missing: the `Typing :: Typed` classifier needs it")
    assert PY_TYPED.read_text(encoding="utf-8").strip() == ""


def test_the_project_urls_point_somewhere():
    """Homepage, documentation, issues and changelog: https URLs, one repository."""
    urls: dict[str, str] = PROJECT["urls"]
    for name in URLS:
        assert urls.get(name, "").startswith("https://"), name
    home = urls["Homepage"].rstrip("/")
    assert all(urls[name].startswith(home) for name in URLS), urls
