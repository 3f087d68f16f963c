"""The ``civicmap`` command: a Flask CLI group around the app factory.

    civicmap db upgrade            create or migrate the schema (Alembic)
    civicmap seed [--count N]      areas, categories and N synthetic reports
    civicmap rollup refresh        recount the low-zoom tile rollup and the dashboard's figures now
    civicmap user add NAME --role  a staff or field-worker account, prints a token
                                   (--password-stdin / --ask-password: for the /staff sign-in)
    civicmap token revoke PREFIX   stop a token working
    civicmap export --format F --out FILE   public reports as open data (the filters of /api/v1/exports)
    civicmap map --out map.html    the planner map with its data inlined, for a meeting without internet
    civicmap run [--port]          serve with gunicorn
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select
from sqlalchemy.engine import Engine

from service import db, queries
from service.app import create_app
from service.cli_map import map_command
from service.cli_sync import sync_group
from service.models import USER_ROLES, ApiToken, User

MIN_PASSWORD_LENGTH = 8
EXPORT_FORMATS = ("geojson", "csv", "gpkg", "fgb", "shp.zip")  # geo.exports.FORMATS, without importing GDAL here

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade_database(engine: object) -> None:
    """Migrate to the newest revision on the given engine (also used by tests and `make run`)."""
    with engine.begin() as conn:  # type: ignore[attr-defined]
        cfg = alembic_config(str(conn.engine.url.render_as_string(hide_password=False)))
        cfg.attributes["connection"] = conn
        alembic_command.upgrade(cfg, "head")


@click.group(cls=FlaskGroup, create_app=lambda: create_app(), add_default_commands=False)
def main() -> None:
    """civicmap: crowdsourced urban-issue mapping."""


main.add_command(sync_group)
main.add_command(map_command)


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("create")
@with_appcontext
def db_create() -> None:
    """Create the database in DATABASE_URL (with PostGIS) if it does not exist."""
    from service.dbadmin import ensure_database

    url = db.get_engine().url
    created = ensure_database(url)
    click.echo(f"database {url.database} {'created' if created else 'exists'}")


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    upgrade_database(db.get_engine())
    click.echo("database is at the newest schema version")


@main.command("seed")
@click.option("--count", default=2000, show_default=True, type=click.IntRange(0, 1_000_000),
              help="how many synthetic reports to add")
@click.option("--seed", "random_seed", default=42, show_default=True, help="random seed (same seed, same data)")
@click.option("--if-empty", is_flag=True, help="add reports only when there are none yet")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="the two years of reports end on this day (default: today, UTC)")
@with_appcontext
def seed_command(count: int, random_seed: int, if_empty: bool, until: datetime | None) -> None:
    """Load areas, categories and synthetic reports from sample_data/."""
    from service import seed

    engine = db.get_engine()
    with engine.begin() as conn:
        areas = seed.load_areas(conn)
        categories = seed.load_categories(conn)
        click.echo(f"areas: {areas}, categories: {categories}")
        if if_empty and seed.reports_exist(conn):
            click.echo("reports already present; not adding more")
            return
        with click.progressbar(length=count, label="reports", show_pos=True, show_percent=True,
                               file=sys.stderr) as bar:
            now = until.replace(tzinfo=timezone.utc) if until else None
            added = seed.seed_reports(conn, count, seed=random_seed, now=now, progress=bar.update)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE reports")
    click.echo(f"reports added: {added}")
    _refresh_rollup(engine)


def _refresh_rollup(engine: Engine) -> None:
    from service import rollup

    with engine.begin() as conn:
        took = rollup.refresh(conn)
    dashboard = sum(seconds for name, seconds in took.items() if name != rollup.TILE_ROLLUP)
    click.echo(f"tile rollup refreshed in {took[rollup.TILE_ROLLUP]:.1f} s; "
               f"dashboard rollups refreshed in {dashboard:.1f} s")


@main.group("rollup")
def rollup_group() -> None:
    """Precomputed counts behind the low-zoom map tiles and the staff dashboard."""


@rollup_group.command("refresh")
@with_appcontext
def rollup_refresh_command() -> None:
    """Recount the tile and dashboard rollups now (the server also does it when older than ROLLUP_MAX_AGE_SECONDS)."""
    _refresh_rollup(db.get_engine())


@main.group("user")
def user_group() -> None:
    """Staff and field-worker accounts."""


@user_group.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(USER_ROLES), required=True)
@click.option("--name", "display_name", default="", help="display name")
@click.option("--password", default=None,
              help="password for the staff sign-in (visible in the shell history; prefer the two below)")
@click.option("--password-stdin", is_flag=True, help="read the staff sign-in password from the first line of stdin")
@click.option("--ask-password", is_flag=True, help="prompt for the staff sign-in password (typed twice, not shown)")
@with_appcontext
def user_add(username: str, role: str, display_name: str, password: str | None, password_stdin: bool,
             ask_password: bool) -> None:
    """Create an account and print its API token (shown once); optionally a password for /staff/login."""
    from service.auth import hash_password, hash_secret, new_secret
    from service.db import get_session

    if sum((password is not None, password_stdin, ask_password)) > 1:
        raise click.UsageError("give at most one of --password, --password-stdin and --ask-password")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif ask_password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise click.BadParameter(f"use at least {MIN_PASSWORD_LENGTH} characters", param_hint="password")
    session = get_session()
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise click.ClickException(f"user {username!r} exists already")
    user = User(username=username, role=role, display_name=display_name,
                password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    token = new_secret()
    session.add(ApiToken(user_id=user.id, token_hash=hash_secret(token), name="cli"))
    session.commit()
    click.echo(f"user {username} ({role}) created")
    click.echo(f"token: {token}")
    click.echo("Keep the token safe: it is shown only this once.", err=True)


@main.group("token")
def token_group() -> None:
    """API tokens."""


@token_group.command("add")
@click.argument("username")
@with_appcontext
def token_add(username: str) -> None:
    """Issue another token for an existing user."""
    from service.auth import hash_secret, new_secret
    from service.db import get_session

    session = get_session()
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    token = new_secret()
    session.add(ApiToken(user_id=user.id, token_hash=hash_secret(token), name="cli"))
    session.commit()
    click.echo(f"token: {token}")


@token_group.command("revoke")
@click.argument("token")
@with_appcontext
def token_revoke(token: str) -> None:
    """Revoke a token (give the token itself)."""
    from service.auth import hash_secret
    from service.db import get_session

    session = get_session()
    updated = queries.revoke_api_token(session, hash_secret(token))
    session.commit()
    if not updated:
        raise click.ClickException("no such active token")
    click.echo("token revoked")


@main.group("device")
def device_group() -> None:
    """Field workers' phones for offline sync."""


@device_group.command("add")
@click.option("--name", required=True, help="a name you will recognise, e.g. 'Sophea's phone'")
@click.option("--area", "area_code", required=True, help="area code the device works in, e.g. PP-doun-penh")
@click.option("--worker", "username", required=True, help="the field worker it belongs to (civicmap user add)")
@click.option("--qr", "qr_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="also write the provisioning link as a QR code PNG")
@with_appcontext
def device_add(name: str, area_code: str, username: str, qr_path: str | None) -> None:
    """Register a phone; prints its token and a provisioning link (shown once)."""
    from service.auth import hash_secret, new_secret
    from service.db import get_session
    from service.models import Device
    from service.queries import find_area

    session = get_session()
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}; create one with: civicmap user add {username} "
                                   "--role field_worker")
    area = find_area(session, area_code)
    if area is None:
        raise click.ClickException(f"no area {area_code!r}; see GET /api/v1/areas for the codes")
    token = new_secret("dev_")
    device = Device(name=name, user_id=user.id, area_id=area.id, token_hash=hash_secret(token))
    session.add(device)
    session.commit()
    link = provisioning_link(current_app.config["CIVICMAP"].public_url, token)
    click.echo(f"device {device.id} ({name}) for {username} in {area_code}")
    click.echo(f"token: {token}")
    click.echo(f"provisioning link: {link}")
    if qr_path:
        import qrcode

        qrcode.make(link).save(qr_path)
        click.echo(f"QR code: {qr_path}")
    click.echo("The token is shown only this once.", err=True)


def provisioning_link(public_url: str, token: str) -> str:
    """The link a phone opens to set itself up; the token sits in the fragment, never in server logs."""
    return f"{public_url}/field#device-token={token}"


@device_group.command("revoke")
@click.argument("device_id", type=int)
@with_appcontext
def device_revoke(device_id: int) -> None:
    """Stop a device's token working (a lost or stolen phone)."""
    from service.db import get_session

    session = get_session()
    updated = queries.revoke_device(session, device_id)
    session.commit()
    if not updated:
        raise click.ClickException(f"no active device {device_id}")
    click.echo(f"device {device_id} revoked")


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True, help="file format")
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), required=True,
              help="file to write; replaced only once the export is complete")
@click.option("--bbox", default=None, help="minLon,minLat,maxLon,maxLat (WGS 84)")
@click.option("--category", "categories", multiple=True,
              help="category code (repeat, or comma-separate); a top-level code takes its subtypes")
@click.option("--status", "statuses", multiple=True, help="status (repeat, or comma-separate)")
@click.option("--area", default=None, help="area code: city, khan or sangkat (e.g. PP-doun-penh)")
@click.option("--since", default=None, help="received at or after (ISO 8601 with offset)")
@click.option("--until", default=None, help="received before (ISO 8601 with offset)")
@click.option("--hxl", is_flag=True, help="CSV: add the HXL hashtag row")
@with_appcontext
def export_command(fmt: str, out: Path, bbox: str | None, categories: tuple[str, ...], statuses: tuple[str, ...],
                   area: str | None, since: str | None, until: str | None, hxl: bool) -> None:
    """Write public reports to an open-data file: the query, filters and writers of /api/v1/exports."""
    from collections.abc import Iterator

    from geo.exports import FILE_FORMATS, LAYER_NAME, csv_chunks, geojson_chunks, write_file
    from service import layer_queries as lq
    from service.db import get_session
    from service.cli_map import parse_filters
    from service.resources.layers import licence
    from service.schemas import ExportQuerySchema

    query = {"bbox": bbox, "category": list(categories), "status": list(statuses), "area": area,
             "since": since, "until": until}
    filters = parse_filters(query, ExportQuerySchema())
    out = out.absolute()
    if not out.parent.is_dir():
        raise click.BadParameter(f"there is no directory {out.parent}", param_hint="--out")
    session = get_session()
    estimate = lq.estimated_matches(session, filters)
    written = 0
    # Written in a directory next to --out (the same file system) and renamed into place when complete,
    # so a failed or interrupted export never leaves a half file under the name asked for.
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    part = work / f"{LAYER_NAME}.{fmt}"
    try:
        with click.progressbar(length=estimate, label="reports (estimated total)", show_pos=True,
                               file=sys.stderr) as bar:
            def batches() -> Iterator[list[tuple[object, ...]]]:
                nonlocal written
                for rows in lq.stream_rows(session, lq.export_statement(filters)):
                    written += len(rows)
                    bar.update(len(rows))
                    yield rows

            if fmt in FILE_FORMATS:
                write_file(batches(), part, fmt, licence())
            else:
                chunks = geojson_chunks(batches(), licence()) if fmt == "geojson" else csv_chunks(batches(), hxl=hxl)
                with part.open("wb") as handle:
                    for chunk in chunks:
                        handle.write(chunk)
        os.replace(part, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = out.stat().st_size
    click.echo(f"reports written: {written} to {out} ({size:,} bytes)")


@main.command("run")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=lambda: int(os.environ.get("PORT", "5000")), show_default="$PORT or 5000",
              type=int)
@click.option("--workers", default=lambda: int(os.environ.get("WEB_CONCURRENCY", "3")), type=int,
              show_default="$WEB_CONCURRENCY or 3")
def run_command(host: str, port: int, workers: int) -> None:
    """Serve the app with gunicorn."""
    # Threaded workers: a long export stream or a slow 2G client does not block a whole worker,
    # and the worker keeps telling the arbiter it is alive while it streams.
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
            "--worker-class", "gthread", "--threads", "4", "--access-logfile", "-", "--forwarded-allow-ips", "127.0.0.1", "service.app:create_app()"]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
