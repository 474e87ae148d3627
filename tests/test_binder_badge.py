"""The README's Binder badge opens this project's notebooks: its repository comes from pyproject's [project.urls]."""

from __future__ import annotations

import re
import sys

from helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BADGE = re.compile(r"\[!\[[^\]]*\]\([^)]*\)\]\(https://mybinder\.org/v2/gh/([^/\s)]+)/([^/\s)]+)/")


def _github_repos() -> set[str]:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {}).get("urls", {})
    return {f"{m.group(1)}/{m.group(2)}".removesuffix(".git").lower()
            for u in urls.values() for m in [re.match(r"https://github\.com/([^/]+)/([^/#?]+)", u)] if m}


def test_the_binder_badge_names_this_projects_repository_or_is_left_out() -> None:
    readme = (ROOT / "README.md").read_text()
    badges = {f"{a}/{b}".lower() for a, b in BADGE.findall(readme)}
    repos = _github_repos()
    if not repos:  # no repository address in the project's metadata: no badge, rather than someone else's
        assert not badges, f"the README's Binder badge opens {badges}, but pyproject.toml names no repository"
    else:
        assert badges <= repos, f"the Binder badge opens {badges}, not this project's {repos}"
        assert all("labpath=notebooks" in line for line in readme.splitlines() if BADGE.search(line))
