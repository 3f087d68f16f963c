"""The planner map pages: ``/map`` (public data) and ``/staff/map`` (hidden reports and internal fields too).

``map_spec`` gathers what ``service.planner_map`` needs in the reader's
language: the city, its khans and sangkats for the filter panel, category
labels and colours, the endpoints the script reads. The page's HTML does not
depend on the reports, so it is cached per worker for each (variant, city,
language) and answered with an ETag; the data comes from the layer endpoints,
or, for the staff map's single reports, from ``/staff/map/reports``.

``civicmap map --out`` (``offline_map_html``) makes the same map with its
scripts and data inlined.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask_babel import format_date, get_locale
from flask_babel import gettext as _
from marshmallow import ValidationError

from service import layer_queries as lq
from service import planner_map
from service.db import get_session
from service.errors import ApiError, error_response
from service.models import REPORT_SOURCES, REPORT_STATUSES
from service.palette import category_colour
from service.queries import ReportFilters
from service.resources.filters import report_filters
from service.resources.layers import layer_feature, licence
from service.resources.pages import area_rows, asset_url, category_groups, localised
from service.resources.staff import staff_blp
from service.schemas import LayerQuerySchema
from service.staff_auth import READER_ROLES, require_staff_role
from service.ui_strings import status_labels
from service.worker_cache import cached

maps_blp = Blueprint("maps", __name__)

PAGE_CACHE_SECONDS = 300
STAFF_MAX_POINTS = 5000


# --- what a map is made of ----------------------------------------------------------------------------------------

def cities() -> list[Any]:
    """The service's cities (area rows of level ``city``), in name order."""
    return [row for row in area_rows() if row.level == "city"]


def find_city(code: str | None) -> Any:
    """The city asked for (``?city=``, case-insensitive), the first city without one; 404 for an unknown code."""
    rows = cities()
    if not rows:
        raise ApiError("map.no_cities", _("No service area is loaded yet. Run civicmap seed."), 503)
    if not code:
        return next((r for r in rows if r.code == "PP"), rows[0])
    for row in rows:
        if row.code.lower() == code.lower():
            return row
    raise ApiError("map.unknown_city", _("There is no city %(code)s.", code=code), 404,
                   errors={"city": [", ".join(r.code for r in rows)]})


def khans_of(city: Any) -> list[dict[str, Any]]:
    """The city's khans with their sangkats, named in the reader's language."""
    rows = area_rows()
    khans = sorted((r for r in rows if r.parent_id == city.id), key=lambda r: localised(r, "name"))
    return [{"code": k.code, "name": localised(k, "name"),
             "sangkats": [{"code": s.code, "name": localised(s, "name")}
                          for s in sorted((r for r in rows if r.parent_id == k.id), key=lambda r: localised(r, "name"))]}
            for k in khans]


def category_labels() -> dict[str, str]:
    """Every category code's label in the reader's language."""
    labels: dict[str, str] = {}
    for group in category_groups():
        labels[group["code"]] = group["label"]
        for subtype in group["subtypes"]:
            labels[subtype["code"]] = subtype["label"]
    return labels


def area_name(code: str) -> str:
    """An area's name in the reader's language (its code when there is no such area)."""
    row = next((r for r in area_rows() if r.code == code), None)
    return localised(row, "name") if row is not None else code


def _source_labels() -> dict[str, str]:
    names = {"web": _("Website"), "api": _("API"), "field_sync": _("Digital ambassador"),
             "phone_form": _("Phone form"), "seed": _("Sample data"), "open311": _("Open311"),
             "openrosa": _("OpenRosa form")}
    return {code: names.get(code, code) for code in REPORT_SOURCES}


def _js_strings() -> dict[str, str]:
    return {
        "failed": _("The map could not load its data: %(reason)s"),
        "showingSome": _("Showing the newest %(shown)s of about %(total)s reports here. Zoom in to see them all."),
        "showingAll": _("%(n)s reports here."),
        "counted": _("%(n)s reports in this view."),
        "cellCount": _("%(n)s reports: %(category)s"),
        "hidden": _("Hidden"),
        "observed": _("Seen %(date)s"),
        "source": _("Came in by: %(source)s"),
        "photoAlt": _("Photo sent with the report"),
        "photos": _("%(n)s photos"),
        "openReports": _("%(n)s open reports"),
        "medianResolve": _("Median time to fix: %(days)s days"),
        "noMedian": _("None fixed yet"),
        "noOpen": _("No open reports"),
    }


def _labels(title: str) -> planner_map.Labels:
    return planner_map.Labels(title=title, base_map=_("Street map"), heatmap=_("Heatmap"),
                              choropleth=_("Open reports per sangkat"), khans=_("Khan boundaries"),
                              sangkats=_("Sangkat boundaries"))


def map_spec(city: Any, *, staff: bool, offline: dict[str, Any] | None = None) -> planner_map.MapSpec:
    """The planner map of ``city`` in the current request's language (a request context is needed)."""
    lang = str(get_locale() or "en")
    other = "en" if lang == "km" else "km"
    config = current_app.config["CIVICMAP"]
    city_name = localised(city, "name")
    title = (_("Reports in %(city)s (staff)", city=city_name) if staff
             else _("Reports in %(city)s", city=city_name))
    groups = category_groups()
    session = get_session()
    bounds = (offline["data"]["bounds"] if offline is not None
              else cached(f"city_extent:{city.id}", lambda: lq.service_extent(session, city.id), PAGE_CACHE_SECONDS))
    endpoint = "staff.planner_map" if staff else "maps.planner_map"
    context = {
        "title": title, "city": {"code": city.code, "name": city_name}, "staff": staff, "offline": offline,
        "cities": [{"code": c.code, "name": localised(c, "name"), "url": url_for(endpoint, city=c.code)}
                   for c in cities()],
        "lang_url": url_for(endpoint, city=city.code, lang=other), "other_lang": other,
        "groups": [{**g, "colour": category_colour(g["code"])} for g in groups],
        "statuses": REPORT_STATUSES, "khans": khans_of(city),
        "heat_gradient": list(planner_map.HEAT_GRADIENT.values()),
        "data_licence": licence().data_licence,
        "made_on": format_date(datetime.now(timezone.utc), "long") if offline else "",
    }
    js_config: dict[str, Any] = {
        "variant": "staff" if staff else "public",
        "city": {"code": city.code},
        "strings": _js_strings(),
        "categoryLabels": category_labels(),
        "statusLabels": {code: str(label) for code, label in status_labels().items()},
        "trackUrl": f"{config.public_url}/r/" if offline else url_for("pages.track_lookup") + "/",
    }
    if staff:
        js_config["sourceLabels"] = _source_labels()
    if offline is not None:
        js_config["offline"] = offline["data"]
    else:
        js_config["endpoints"] = {
            "grid": url_for("layers.heatmap"),
            "points": url_for("staff.map_reports") if staff else url_for("layers.report_layer"),
            "areas": url_for("layers.area_stats"),
            "boundaries": url_for("areas.Areas"),
        }
    return planner_map.MapSpec(
        lang=lang, labels=_labels(title), bounds=bounds,
        groups=[{"code": g["code"], "label": g["label"], "colour": category_colour(g["code"])} for g in groups],
        config=js_config,
        header_html=render_template("map/_header.html", **context),
        panel_html=render_template("map/_panel.html", **context),
        tiles_url=config.map_tiles_url, tiles_attribution=config.map_tiles_attribution,
        inline=offline is not None, asset_url=None if offline is not None else asset_url,
    )


# --- the pages ----------------------------------------------------------------------------------------------------

def _content_security_policy(html: str) -> str:
    """Scripts only from here and the page's own inline script (by hash); images from here and the tile host."""
    tiles = current_app.config["CIVICMAP"].map_tiles_url
    img = "'self' data:"
    if tiles:
        parts = urlsplit(tiles.replace("{s}", "a"))
        host = parts.netloc.replace("a.", "*.", 1) if "{s}" in tiles else parts.netloc
        img += f" {parts.scheme}://{host}"
    return (f"default-src 'self'; script-src 'self' {' '.join(planner_map.inline_script_hashes(html))}; "
            f"style-src 'self' 'unsafe-inline'; img-src {img}; connect-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def _map_response(staff: bool) -> Response:
    city = find_city(request.args.get("city"))
    lang = str(get_locale() or "en")
    key = f"planner_map:{'staff' if staff else 'public'}:{city.code}:{lang}"

    def render() -> tuple[str, str, str]:
        html = planner_map.render(map_spec(city, staff=staff))
        return html, hashlib.sha256(html.encode()).hexdigest()[:20], _content_security_policy(html)

    html, digest, policy = cached(key, render, PAGE_CACHE_SECONDS)
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Content-Security-Policy": policy, "Vary": "Cookie, Accept-Language",
               "Cache-Control": "private, no-cache" if staff else "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers=headers)
    return Response(html, mimetype="text/html", headers=headers)


@maps_blp.get("/map", endpoint="planner_map")
def planner_map_page() -> Response:
    """The public planner map: public reports only, as the layer endpoints serve them."""
    return _map_response(staff=False)


@staff_blp.get("/map", endpoint="planner_map")
@require_staff_role(*READER_ROLES)
def staff_planner_map() -> Response:
    """The staff planner map: single reports include hidden ones, with their source and a link to triage."""
    return _map_response(staff=True)


@staff_blp.get("/map/reports", endpoint="map_reports")
@require_staff_role(*READER_ROLES)
def staff_map_reports() -> Response:
    """Single reports for the staff map (GeoJSON), hidden ones included; errors in the API's JSON shape."""
    try:
        args = LayerQuerySchema().load(request.args.to_dict())
        public = report_filters(args)
    except ValidationError as exc:
        return error_response(400, "request.invalid", _("The query is not valid."), exc.normalized_messages())
    except ApiError as exc:
        return error_response(exc.status, exc.error, exc.message, exc.errors)
    filters = ReportFilters(bbox=public.bbox, categories=public.categories, statuses=public.statuses,
                            area=public.area, since=public.since, until=public.until, include_hidden=True)
    limit = min(args["limit"], STAFF_MAX_POINTS)
    session = get_session()
    rows = lq.fetch_all(session, lq.layer_statement(filters, limit + 1, extra_columns=lq.STAFF_LAYER_COLUMNS))
    more = len(rows) > limit
    rows = rows[:limit]
    names = cached("area_names", lambda: lq.area_names(session))
    photo_base = url_for("staff.photo", sha256="x")[:-1]
    staff_base = url_for("staff.report", reference="x")[:-1]
    features = []
    for row in rows:
        feature = layer_feature(row, names, photo_base)
        feature["properties"].update(hidden=row[11], source=row[12], staff_url=staff_base + row[1])
        features.append(feature)
    matched = len(features) if not more else lq.estimated_matches(session, filters)
    body = orjson.dumps({"type": "FeatureCollection", "features": features, "returned": len(features),
                         "matched": matched, "matched_estimated": more, "next_cursor": "more" if more else None},
                        option=orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS)
    return Response(body, mimetype="application/geo+json", headers={"Cache-Control": "private, no-store"})
