"""The civicmap CLI and the sample-data seeder, end to end on a fresh database."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from service.app import create_app
from service.config import Config
from tests.conftest import fresh_database, server_url


@pytest.fixture(scope="module")
def fresh_url() -> Iterator[str]:
    """An empty PostGIS database: the CLI itself migrates and seeds it."""
    with fresh_database(server_url().set(database=f"civicmap_cli_{os.getpid()}"), prepared=False) as url:
        yield url


@pytest.fixture(scope="module")
def runner(fresh_url: str):
    config = dataclasses.replace(Config.from_env(), database_url=fresh_url)
    app = create_app(config)
    yield app.test_cli_runner()
    app.extensions["civicmap.engine"].dispose()


@pytest.fixture(scope="module")
def seeded(runner, fresh_url):
    from service.cli import main

    upgrade = runner.invoke(main, ["db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    seed = runner.invoke(main, ["seed", "--count", "3000", "--seed", "7"])
    assert seed.exit_code == 0, seed.output
    engine = create_engine(fresh_url)
    yield engine, seed.output
    engine.dispose()


def test_seed_loads_areas_categories_reports(seeded):
    engine, output = seeded
    assert "reports added: 3000" in output
    assert "tile rollup refreshed" in output
    with engine.connect() as conn:
        levels = dict(conn.execute(text("SELECT level, count(*) FROM areas GROUP BY level")).all())
        assert levels == {"city": 2, "district": 13, "commune": 101}
        assert conn.scalar(text("SELECT count(*) FROM categories WHERE parent_code IS NULL")) == 4
        assert conn.scalar(text("SELECT count(*) FROM reports")) == 3000


def test_seed_refreshes_the_tile_rollup_and_the_command_does_too(runner, seeded):
    from service.cli import main

    engine, _ = seeded
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT sum(n) FROM report_tile_cells WHERE level = 6")) == 3000
        before = conn.scalar(text("SELECT refreshed_at FROM rollup_state"))
    result = runner.invoke(main, ["rollup", "refresh"])
    assert result.exit_code == 0, result.output
    assert "tile rollup refreshed" in result.output
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT refreshed_at FROM rollup_state")) > before


def test_seeded_reports_lie_in_their_sangkat_and_khan(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        misplaced = conn.scalar(text("""
            SELECT count(*) FROM reports r JOIN areas c ON c.id = r.commune_id JOIN areas d ON d.id = r.district_id
            WHERE NOT ST_Covers(c.geom, r.location) OR c.parent_id <> d.id OR d.parent_id <> r.city_id"""))
        assert misplaced == 0


def test_seeded_histories_are_plausible(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        bad_times = conn.scalar(text("""
            SELECT count(*) FROM reports WHERE received_at < observed_at OR acknowledged_at < received_at
               OR closed_at < received_at OR (status IN ('resolved', 'rejected')) <> (closed_at IS NOT NULL)"""))
        assert bad_times == 0
        first_not_new = conn.scalar(text("""
            SELECT count(*) FROM reports r WHERE (SELECT new_status FROM report_events e WHERE e.report_id = r.id
                                                  ORDER BY id LIMIT 1) <> 'new'"""))
        assert first_not_new == 0
        last_differs = conn.scalar(text("""
            SELECT count(*) FROM reports r WHERE (SELECT new_status FROM report_events e WHERE e.report_id = r.id
                                                  ORDER BY id DESC LIMIT 1) <> r.status"""))
        assert last_differs == 0
        statuses = set(conn.scalars(text("SELECT DISTINCT status FROM reports")))
        assert {"new", "resolved"} <= statuses
        refs = conn.execute(text("SELECT count(DISTINCT reference), count(*) FROM reports")).one()
        assert refs[0] == refs[1]
        # Dense central Phnom Penh gets more reports per km² than the outskirts.
        density = dict(conn.execute(text("""
            SELECT d.name_en, count(r.*) / (ST_Area(d.geom::geography) / 1e6) FROM areas d
            LEFT JOIN reports r ON r.district_id = d.id WHERE d.level = 'district' GROUP BY d.id""")).all())
        assert density["Doun Penh"] > 3 * density["Dangkao"]


def test_seed_again_with_if_empty_adds_nothing(runner, seeded):
    from service.cli import main

    engine, _ = seeded
    result = runner.invoke(main, ["seed", "--if-empty"])
    assert result.exit_code == 0 and "not adding more" in result.output
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM reports")) == 3000


def test_user_add_prints_a_working_token(runner, seeded, fresh_url):
    from service.cli import main

    result = runner.invoke(main, ["user", "add", "sophea", "--role", "moderator"])
    assert result.exit_code == 0, result.output
    token = next(line.split(": ", 1)[1] for line in result.output.splitlines() if line.startswith("token: "))
    config = dataclasses.replace(Config.from_env(), database_url=fresh_url)
    app = create_app(config)
    client = app.test_client()
    report = client.get("/api/v1/reports?limit=1").get_json()["items"][0]
    response = client.patch(f"/api/v1/reports/{report['id']}/status", headers={"Authorization": f"Bearer {token}"},
                            json={"status": report["status"], "note": "checked", "version": report["version"]})
    assert response.status_code == 200, response.get_json()
    again = runner.invoke(main, ["user", "add", "sophea", "--role", "moderator"])
    assert again.exit_code != 0 and "exists already" in again.output
    revoke = runner.invoke(main, ["token", "revoke", token])
    assert revoke.exit_code == 0
    refused = client.patch(f"/api/v1/reports/{report['id']}/status", headers={"Authorization": f"Bearer {token}"},
                           json={"status": "resolved", "version": report["version"] + 1})
    assert refused.status_code == 401
    app.extensions["civicmap.engine"].dispose()


def test_same_seed_same_day_same_data(connection):
    """`--seed` is reproducible: the same seed and day give the same reports, row for row."""
    from datetime import datetime, timezone

    from service.seed import seed_reports

    day = datetime(2026, 6, 1, tzinfo=timezone.utc)

    def fingerprint() -> list[tuple]:
        savepoint = connection.begin_nested()
        seed_reports(connection, 300, seed=11, now=day)
        rows = connection.execute(text(
            "SELECT category_code, ST_AsText(location), status, observed_at, closed_at, "
            "(SELECT count(*) FROM report_events e WHERE e.report_id = r.id) "
            "FROM reports r WHERE source = 'seed' ORDER BY reference")).all()
        savepoint.rollback()
        return [tuple(row) for row in rows]

    first, second = fingerprint(), fingerprint()
    assert len(first) == 300
    assert sorted(first, key=str) == sorted(second, key=str)


def test_device_add_token_syncs_and_revoke_stops_it(runner, seeded, fresh_url, tmp_path):
    import json
    import uuid
    from datetime import datetime, timezone

    from PIL import Image

    from service.cli import main

    assert runner.invoke(main, ["user", "add", "dara", "--role", "field_worker"]).exit_code == 0
    qr = tmp_path / "phone.png"
    result = runner.invoke(main, ["device", "add", "--name", "Dara's phone", "--area", "PP-doun-penh",
                                  "--worker", "dara", "--qr", str(qr)])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines() if ": " in line)
    token, link = lines["token"], lines["provisioning link"]
    assert token.startswith("dev_") and link.endswith(f"/field#device-token={token}")
    with Image.open(qr) as image:
        assert image.size[0] > 100
    device_id = int(result.output.split()[1])
    config = dataclasses.replace(Config.from_env(), database_url=fresh_url)
    app = create_app(config)
    client = app.test_client()

    def push() -> int:
        body = {"device_id": str(device_id), "batch_id": str(uuid.uuid4()),
                "sent_at": datetime.now(timezone.utc).isoformat(),
                "items": [{"client_id": str(uuid.uuid4()), "op": "create",
                           "payload": {"category": "waste.burning",
                                       "location": {"type": "Point", "coordinates": [104.9282, 11.5625]}}}]}
        return client.post("/api/v1/sync/batches", data=json.dumps(body), content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"}).status_code

    assert push() == 200
    assert runner.invoke(main, ["device", "revoke", str(device_id)]).exit_code == 0
    assert push() == 401
    missing = runner.invoke(main, ["device", "add", "--name", "x", "--area", "PP-nowhere", "--worker", "dara"])
    assert missing.exit_code != 0 and "no area" in missing.output
    app.extensions["civicmap.engine"].dispose()
