"""``civicmap sync``: push a device's queue (or a paper-survey file) to a server, import surveys, pull changes.

    civicmap sync push QUEUE_OR_FILE --server URL --token TOKEN --device-id ID [--batch-size N]
    civicmap sync import FILE.csv|FILE.geojson [--queue QUEUE]
    civicmap sync pull --queue QUEUE --server URL --token TOKEN --device-id ID

``push`` given a ``.csv``/``.geojson`` first imports it into ``<file>.queue.sqlite``
next to it (importing again adds nothing: row ids are stable, see
``sync.importer``), then pushes that queue with a progress bar and prints a
summary: counts per result and every conflict or rejection with its error.
The token may come from ``CIVICMAP_DEVICE_TOKEN``, the server and device id
from ``CIVICMAP_SERVER`` and ``CIVICMAP_DEVICE_ID``, or from the queue, which
remembers the last ones used. Exit status 1 when something could not be
delivered (the link failed, the token was refused, a photo did not upload);
rejections and conflicts are reported but are answers, not failures.

Needs no database and no app: only ``sync.client`` and ``sync.importer``.
"""

from __future__ import annotations

from pathlib import Path

import click

from sync.client import (
    LocalQueue,
    PushSummary,
    RequestError,
    SyncClient,
    TransportFailed,
)
from sync.importer import SurveyFileError, items_from_file

SURVEY_SUFFIXES = (".csv", ".tsv", ".geojson", ".json")


def default_queue_path(file: Path) -> Path:
    """``survey.csv`` → ``survey.csv.queue.sqlite``, next to it."""
    return file.with_name(file.name + ".queue.sqlite")


def _import(file: Path, queue: LocalQueue, id_scope: str | None) -> None:
    try:
        result = items_from_file(file, id_scope=id_scope)
    except SurveyFileError as exc:
        raise click.ClickException(str(exc)) from exc
    outcome = queue.import_items(result, labels=result.labels)
    click.echo(f"Imported {file.name}: {len(outcome['added'])} new, {len(outcome['existing'])} already queued"
               + (f", {len(outcome['replaced'])} updated before sending" if outcome["replaced"] else "")
               + f"; {len(result.errors)} row{'s' if len(result.errors) != 1 else ''} not imported.")
    if result.ignored_columns:
        click.echo(f"  ignored columns: {', '.join(result.ignored_columns)}")
    for problem in result.errors:
        click.echo(f"  not imported: {problem}", err=True)
    for problem in result.warnings:
        click.echo(f"  note: {problem}")
    labels = dict(zip((item.client_id for item in result.items), result.labels, strict=True))
    for client_id in outcome["refused"]:
        click.echo(f"  not queued: {labels.get(client_id, client_id)} was already sent with other content "
                   "(correct it on the server instead)", err=True)


def _client(queue: LocalQueue, server: str | None, token: str | None, device_id: str | None, *,
            batch_size: int = 100, max_retries: int = 8, timeout: float = 30.0) -> SyncClient:
    server = server or queue.get_meta("server_url")
    device_id = device_id or queue.get_meta("device_id")
    if not server:
        raise click.UsageError("Give --server (or CIVICMAP_SERVER).")
    if not device_id:
        raise click.UsageError("Give --device-id (or CIVICMAP_DEVICE_ID).")
    if not token:
        raise click.UsageError("Give --token (or CIVICMAP_DEVICE_TOKEN).")
    return SyncClient(server, token, device_id, queue, batch_size=batch_size, max_retries=max_retries,
                      timeout=timeout)


def _print_summary(summary: PushSummary) -> None:
    counts = summary.counts
    click.echo("Results: " + ", ".join(f"{kind} {counts.get(kind, 0)}"
                                       for kind in ("created", "unchanged", "conflict", "rejected")))
    for outcome in summary.problems():
        name = outcome.label or outcome.client_id
        detail = outcome.message or ""
        fields = "; ".join(_field_errors(outcome.errors))
        click.echo(f"  {outcome.result}: {name} [{outcome.client_id}] {outcome.error}: {detail}"
                   + (f" ({fields})" if fields else ""))
    if summary.replayed:
        click.echo(f"{summary.replayed} batch{'es' if summary.replayed != 1 else ''} had already arrived "
                   "(answered as a replay; nothing stored twice).")
    if summary.photos_uploaded or summary.photo_failures:
        click.echo(f"Photos: {len(summary.photos_uploaded)} uploaded, {len(summary.photo_failures)} failed.")
        for sha, why in summary.photo_failures.items():
            click.echo(f"  photo {sha[:12]}…: {why}", err=True)
    if summary.stopped:
        click.echo(f"Stopped: {summary.stopped}", err=True)
    if summary.pending:
        click.echo(f"{summary.pending} item{'s' if summary.pending != 1 else ''} still to send; run push again.")


def _field_errors(errors: object, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        out: list[str] = []
        for key, value in errors.items():
            out.extend(_field_errors(value, f"{prefix}{key}."))
        return out
    if isinstance(errors, (list, tuple)):
        return [f"{prefix.rstrip('.')}: {' '.join(str(e) for e in errors)}"] if errors else []
    return [f"{prefix.rstrip('.')}: {errors}"]


server_option = click.option("--server", envvar="CIVICMAP_SERVER", metavar="URL",
                             help="the server's base URL, e.g. https://civicmap.example (default: the queue's last)")
token_option = click.option("--token", envvar="CIVICMAP_DEVICE_TOKEN", metavar="TOKEN",
                            help="the device token (dev_…); also from CIVICMAP_DEVICE_TOKEN")
device_option = click.option("--device-id", envvar="CIVICMAP_DEVICE_ID", metavar="ID",
                             help="the device's id, as given by `civicmap device add` (default: the queue's last)")


@click.group("sync")
def sync_group() -> None:
    """Offline sync with a civicmap server (docs/sync-protocol.md)."""


@sync_group.command("push")
@click.argument("queue_or_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@server_option
@token_option
@device_option
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 500),
              help="items per batch")
@click.option("--retries", default=8, show_default=True, type=click.IntRange(0, 100),
              help="retries of one request before giving up for now")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600), help="seconds per request")
@click.option("--id-scope", default=None, help="when importing: the survey's name, if its ids restart at 1")
def push_command(queue_or_file: Path, server: str | None, token: str | None, device_id: str | None,
                 batch_size: int, retries: int, timeout: float, id_scope: str | None) -> None:
    """Push a queue file, or import a .csv/.geojson survey into <file>.queue.sqlite and push that."""
    is_survey = queue_or_file.suffix.lower() in SURVEY_SUFFIXES
    queue_path = default_queue_path(queue_or_file) if is_survey else queue_or_file
    with LocalQueue(queue_path) as queue:
        if is_survey:
            _import(queue_or_file, queue, id_scope)
        client = _client(queue, server, token, device_id, batch_size=batch_size, max_retries=retries,
                         timeout=timeout)
        total = queue.pending_count()
        click.echo(f"Pushing {total} item{'s' if total != 1 else ''} from {queue_path.name} to {client.base_url}")
        with click.progressbar(length=total, label="Pushing", show_pos=True) as bar:
            summary = client.push(progress=bar.update)
        _print_summary(summary)
    if summary.stopped or summary.photo_failures:
        raise SystemExit(1)


@sync_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--queue", "queue_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the queue file (default: <file>.queue.sqlite next to FILE)")
@click.option("--id-scope", default=None, help="the survey's name, if its ids restart at 1 in every survey")
def import_command(file: Path, queue_path: Path | None, id_scope: str | None) -> None:
    """Turn a paper-survey spreadsheet (.csv) or .geojson into queued reports with stable ids."""
    with LocalQueue(queue_path or default_queue_path(file)) as queue:
        _import(file, queue, id_scope)
        click.echo(f"{queue.pending_count()} item(s) waiting in {queue.path.name}.")


@sync_group.command("pull")
@click.option("--queue", "queue_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="the queue file that keeps the cursor and the changes")
@server_option
@token_option
@device_option
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500), help="changes per page")
def pull_command(queue_path: Path, server: str | None, token: str | None, device_id: str | None,
                 limit: int) -> None:
    """Fetch what changed in the device's area since the last pull."""
    with LocalQueue(queue_path) as queue:
        client = _client(queue, server, token, device_id)
        try:
            pulled = client.pull(limit=limit)
        except (TransportFailed, RequestError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"{pulled.changes} change{'s' if pulled.changes != 1 else ''} in {pulled.pages} "
               f"page{'s' if pulled.pages != 1 else ''}; {pulled.updated} of this queue's items updated."
               + (" (The old cursor was refused; read the feed from the start.)" if pulled.restarted else ""))
