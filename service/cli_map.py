"""``civicmap map --out map.html``: the planner map as one file, to carry to a meeting without internet.

The same Folium page as ``/map`` (``service.resources.maps.map_spec``), but
with Leaflet, its plugins, civicmap's script and style sheet, and the data
(the matching reports, the open reports per sangkat, the khan and sangkat
outlines) inlined. Only the base tiles still need a connection; without one
the outlines give the map its shape. The filters are those of ``/map`` and
of ``civicmap export``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import orjson
from flask import current_app
from flask.cli import with_appcontext

MAX_REPORTS = 20_000


def parse_filters(query: dict[str, Any], schema: Any) -> Any:
    """``ReportFilters`` from command-line options (``civicmap map`` and ``civicmap export``), or a
    ``click.BadParameter`` naming the option."""
    from marshmallow import ValidationError

    from service.errors import ApiError
    from service.resources.filters import report_filters

    try:
        return report_filters(schema.load({k: v for k, v in query.items() if v}))
    except ValidationError as exc:
        name, messages = next(iter(exc.normalized_messages().items()))
        hint = " Give ISO 8601 with an offset, e.g. 2026-01-31T00:00:00+07:00." if name in ("since", "until") else ""
        raise click.BadParameter(" ".join(map(str, messages)) + hint, param_hint=f"--{name}") from exc
    except ApiError as exc:
        name = next(iter(exc.errors), None)
        raise click.BadParameter(exc.message, param_hint=f"--{name}" if name else None) from exc


def offline_data(filters: Any, city: Any, max_reports: int) -> dict[str, Any]:
    """The data the offline map carries: compact report rows, area names, the choropleth and the outlines."""
    from service import layer_queries as lq
    from service import queries
    from service.db import get_session
    from service.queries import AreaRef, ReportFilters
    from service.resources.layers import area_stats_collection

    session = get_session()
    rows = lq.fetch_all(session, lq.layer_statement(filters, max_reports + 1))
    truncated = len(rows) > max_reports
    rows = rows[:max_reports]
    reports = [[round(lon, 6), round(lat, 6), ref, category, status, observed.date().isoformat(), commune, district]
               for _id, ref, category, status, observed, _received, lon, lat, district, commune, _photos in rows]
    names = {str(area_id): {"name_en": row[2], "name_km": row[3]} for area_id, row in lq.area_names(session).items()}
    # The choropleth covers the city, or the khan or sangkat asked for.
    scope = filters.area or AreaRef(id=city.id, level="city", code=city.code)
    choropleth = area_stats_collection(session, ReportFilters(categories=filters.categories, statuses=filters.statuses,
                                                              area=scope, since=filters.since, until=filters.until),
                                       "commune", True)
    bounds = lq.service_extent(session, scope.id)
    outlines = {level: orjson.Fragment(queries.areas_geojson(session, level=level))
                for level in ("district", "commune")}
    return {"reports": reports, "areaNames": names, "choropleth": choropleth,
            "khans": outlines["district"], "sangkats": outlines["commune"], "truncated": truncated,
            "bounds": bounds}


def _filter_summary(options: dict[str, Any]) -> list[tuple[str, str]]:
    """The filters the map was made with, in the map's language (names, not codes)."""
    from flask_babel import gettext as _

    from service.resources.maps import area_name, category_labels
    from service.ui_strings import status_labels

    words = {**category_labels(), **{code: str(label) for code, label in status_labels().items()}}

    def named(name: str, value: str) -> str:
        if name == "area":
            return area_name(value)
        if name in ("since", "until"):
            return value
        return ", ".join(words.get(code.strip(), code.strip()) for code in value.split(","))

    labels = {"category": _("Category"), "status": _("Status"), "area": _("Area"), "since": _("Received from"),
              "until": _("until")}
    return [(labels[name], named(name, value)) for name, value in options.items() if value and name in labels]


@click.command("map")
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), required=True,
              help="HTML file to write; replaced only once it is complete")
@click.option("--city", default="PP", show_default=True, help="city code (PP, SV)")
@click.option("--lang", type=click.Choice(["km", "en"]), default="km", show_default=True, help="language of the map")
@click.option("--category", "categories", multiple=True,
              help="category code (repeat, or comma-separate); a top-level code takes its subtypes")
@click.option("--status", "statuses", multiple=True, help="status (repeat, or comma-separate)")
@click.option("--area", default=None, help="khan or sangkat code (e.g. PP-doun-penh)")
@click.option("--since", default=None, help="received at or after (ISO 8601 with offset)")
@click.option("--until", default=None, help="received before (ISO 8601 with offset)")
@click.option("--max-reports", default=MAX_REPORTS, show_default=True, type=click.IntRange(1, 200_000),
              help="most reports on the map (the newest that match)")
@click.option("--no-base-map", is_flag=True, help="leave the base tiles out (they need internet)")
@with_appcontext
def map_command(out: Path, city: str, lang: str, categories: tuple[str, ...], statuses: tuple[str, ...],
                area: str | None, since: str | None, until: str | None, max_reports: int, no_base_map: bool) -> None:
    """Write the planner map, with its data and scripts inlined, to one HTML file that works offline."""
    from service import planner_map
    from service.errors import ApiError
    from service.queries import AreaRef
    from service.resources.maps import find_city, map_spec
    from service.schemas import ExportQuerySchema

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    out = out.absolute()
    if not out.parent.is_dir():
        raise click.BadParameter(f"there is no directory {out.parent}", param_hint="--out")
    options = {"category": ",".join(categories), "status": ",".join(statuses), "area": area,
               "since": since, "until": until}
    # Checked outside the request below, so the messages are in English whatever --lang says.
    try:
        chosen = find_city(city)
    except ApiError as exc:
        raise click.BadParameter(exc.message, param_hint="--city") from exc
    query = {"category": list(categories), "status": list(statuses), "area": area, "since": since, "until": until}
    filters = parse_filters(query, ExportQuerySchema())
    if filters.area is None:  # the city's reports only, as /map shows them
        filters = dataclasses.replace(filters, area=AreaRef(id=chosen.id, level="city", code=chosen.code))
    click.echo("reading reports…", err=True)
    data = offline_data(filters, chosen, max_reports)
    with app.test_request_context("/map", query_string={"lang": lang}):
        offline = {"data": data, "count": len(data["reports"]), "truncated": data["truncated"],
                   "filters": _filter_summary(options)}
        spec = map_spec(chosen, staff=False, offline=offline)
        if no_base_map:
            spec.tiles_url = ""
        html = planner_map.render(spec)
    fd, part = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(html)
        os.replace(part, out)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    more = " (the newest that match; raise --max-reports for more)" if data["truncated"] else ""
    click.echo(f"map written: {len(data['reports'])} reports{more} to {out} ({out.stat().st_size:,} bytes)")
    if data["truncated"]:
        print(f"warning: more than {max_reports} reports match", file=sys.stderr)
