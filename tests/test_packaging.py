"""The project's own files: compose file, config table, README, factory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.app import create_app
from service.config import SETTINGS, Config

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_runs_app_on_postgis_with_health_checks():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    db, app = compose["services"]["db"], compose["services"]["app"]
    assert "postgis" in db["image"] and db["healthcheck"]["test"]
    assert app["healthcheck"]["test"] and app["depends_on"]["db"]["condition"] == "service_healthy"
    known = {name for name, _, _ in SETTINGS}
    assert set(app["environment"]) <= known, set(app["environment"]) - known
    assert "@db:5432/" in app["environment"]["DATABASE_URL"]


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name, _, _ in SETTINGS if f"`{name}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}"
    assert "make run" in readme and "make test" in readme
    assert "geoBoundaries" in readme and "CC BY 4.0" in readme


def test_ci_runs_the_readme_test_command():
    assert re.search(r"^make test$", (ROOT / ".ci/run").read_text(), re.MULTILINE)


def test_production_refuses_default_secret(monkeypatch):
    monkeypatch.setenv("CIVICMAP_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@localhost/x")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        Config.from_env()


def test_factory_builds_independent_apps(config, engine):
    first, second = create_app(config, engine=engine), create_app(config, engine=engine, TESTING=True)
    assert first is not second and second.testing and not first.testing
    assert first.config["API_TITLE"] == "civicmap"
