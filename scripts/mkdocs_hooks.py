"""MkDocs hooks for the tiltedsam site (``hooks:`` in mkdocs.yml).

* Optional pages: a nav entry whose file is listed in ``OPTIONAL_PAGES`` is dropped when the file
  does not exist yet (pages written in parallel branches), instead of failing ``--strict``.
  Any other missing nav file still fails the build.
* How-to guides: every ``docs/howto/*.md`` not named in the nav is appended to the "How-to"
  section, sorted by file name, so a new guide shows up without editing mkdocs.yml.
* The method table: ``{{ method_table }}`` in a page becomes the table of
  ``tiltedsam.optim.METHODS``, so a method added to the table shows up in the docs by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.tiltedsam")

OPTIONAL_PAGES = {"reliability.md"}
HOWTO_SECTION = "How-to"
HOWTO_DIR = "howto"


def _entry_path(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        value = next(iter(entry.values()))
        return value if isinstance(value, str) else None
    return None


def _prune(nav: list[Any], docs_dir: Path) -> list[Any]:
    kept = []
    for entry in nav:
        if isinstance(entry, dict) and len(entry) == 1:
            title, value = next(iter(entry.items()))
            if isinstance(value, list):
                kept.append({title: _prune(value, docs_dir)})
                continue
        path = _entry_path(entry)
        if path in OPTIONAL_PAGES and not (docs_dir / path).exists():
            log.info("nav: %s is not in docs/ yet; left out of the nav", path)
            continue
        kept.append(entry)
    return kept


def _listed(nav: list[Any]) -> set[str]:
    found: set[str] = set()
    for entry in nav:
        if isinstance(entry, dict) and len(entry) == 1:
            value = next(iter(entry.values()))
            if isinstance(value, list):
                found |= _listed(value)
                continue
        path = _entry_path(entry)
        if path is not None:
            found.add(path)
    return found


def on_config(config: Any) -> Any:
    nav = config.get("nav")
    if not nav:
        return config
    docs_dir = Path(config["docs_dir"])
    nav = _prune(nav, docs_dir)
    listed = _listed(nav)
    guides = sorted(p.relative_to(docs_dir).as_posix() for p in (docs_dir / HOWTO_DIR).glob("*.md"))
    missing = [g for g in guides if g not in listed]
    for entry in nav:
        if isinstance(entry, dict) and HOWTO_SECTION in entry and missing:
            entry[HOWTO_SECTION] = [*entry[HOWTO_SECTION], *missing]
            log.info("nav: appended %s to %s", ", ".join(missing), HOWTO_SECTION)
    config["nav"] = nav
    return config


METHOD_TABLE = "{{ method_table }}"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """``{{ method_table }}`` on a line of its own becomes the method table of
    ``tiltedsam.optim.METHODS`` (names, rules, passes, the harness's defaults)."""
    if METHOD_TABLE not in markdown:
        return markdown
    from tiltedsam.optim import method_table

    return markdown.replace(METHOD_TABLE, method_table().rstrip("\n"))
