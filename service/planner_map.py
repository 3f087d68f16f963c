"""The planner map: a Folium map built on civicmap's vendored Leaflet, whose layers ``static/js/planner-map.js`` fills.

Folium builds the page: the base tiles (``MAP_TILES_URL``, OpenStreetMap by
default), one empty feature group per category group, the heatmap, the
choropleth and the boundaries, the layer control and the view of the city.
The script then loads the data by URL from the layer endpoints, so the page
is the same size whether there are two thousand reports or a million.

Every script and style sheet is a file of ``static/`` served by civicmap
(Folium's CDN links are replaced), so the map works in an office without
internet except for the base tiles. ``inline=True`` (``civicmap map --out``)
puts those files, and the data, into the one HTML file instead.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import folium
import orjson
from branca.element import Element, Figure, MacroElement
from folium.plugins import HeatMap
from jinja2 import Template

STATIC = Path(__file__).resolve().parent.parent / "static"
SCRIPTS = ("vendor/leaflet/leaflet.js", "vendor/heat/leaflet-heat.js",
           "vendor/markercluster/leaflet.markercluster.js", "js/planner-map.js")
STYLES = ("vendor/leaflet/leaflet.css", "vendor/markercluster/MarkerCluster.css", "css/planner-map.css")
POINT_ZOOM = 14  # from this zoom on the report layers show single reports (as the vector tiles do)
MAX_POINTS = 2000  # single reports fetched for one view; more and the page says how many it left out
OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = ('&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors')
HEAT_GRADIENT = {0.2: "#2c7bb6", 0.4: "#abd9e9", 0.6: "#ffffbf", 0.8: "#fdae61", 1.0: "#d7191c"}
_CSS_URL = re.compile(r"url\((['\"]?)(images/[^)'\"]+)\1\)")


class MapPage(Figure):
    """Folium's figure with a language, a title and the page's own header and panel around the map."""

    _template = Template(
        "<!DOCTYPE html>\n"
        '<html lang="{{ this.lang }}">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        "<title>{{ this.title|e }}</title>\n"
        '<link rel="icon" href="data:,">\n'
        "{{ this.header.render(**kwargs) }}\n"
        "</head>\n"
        '<body class="cm-page lang-{{ this.lang }}">\n'
        "{{ this.html.render(**kwargs) }}\n"
        "<script>\n"
        "{{ this.script.render(**kwargs) }}\n"
        "</script>\n"
        "</body>\n"
        "</html>\n"
    )

    def __init__(self, title: str, lang: str) -> None:
        super().__init__(title=title)
        self.lang = lang
        self.header._children.pop("meta_http", None)  # the <meta charset> above says it


class PlannerLayers(MacroElement):
    """Hands the map, its empty layers and the configuration to ``CivicMap.init`` once Folium has made them."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        CivicMap.init({{ this._parent.get_name() }}, {{ this.config_json }}, {
            groups: { {%- for code, layer in this.groups.items() %}{{ code|tojson }}: {{ layer.get_name() }},{% endfor %} },
            heat: {{ this.heat.get_name() }},
            choropleth: {{ this.choropleth.get_name() }},
            khans: {{ this.khans.get_name() }},
            sangkats: {{ this.sangkats.get_name() }}
        });
        {% endmacro %}
    """)

    def __init__(self, config_json: str, groups: dict[str, folium.FeatureGroup], heat: HeatMap,
                 choropleth: folium.FeatureGroup, khans: folium.FeatureGroup, sangkats: folium.FeatureGroup) -> None:
        super().__init__()
        self._name = "PlannerLayers"
        self.config_json = config_json
        self.groups, self.heat, self.choropleth, self.khans, self.sangkats = groups, heat, choropleth, khans, sangkats


@dataclass(frozen=True)
class Labels:
    """The translated names Folium puts in the layer control (the caller translates them)."""

    title: str
    base_map: str
    heatmap: str
    choropleth: str
    khans: str
    sangkats: str


@dataclass
class MapSpec:
    """Everything one planner map is made from; ``render`` turns it into a page."""

    lang: str
    labels: Labels
    bounds: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat of the city
    groups: list[dict[str, str]]  # [{code, label, colour}] of the top-level categories
    config: dict[str, Any]  # what planner-map.js reads (endpoints, strings, labels…)
    header_html: str = ""
    panel_html: str = ""
    tiles_url: str = OSM_TILES
    tiles_attribution: str = OSM_ATTRIBUTION
    inline: bool = False  # put scripts, styles and data into the page (the offline map)
    asset_url: Callable[[str], str] | None = None  # live pages: the URL of a static file


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return orjson.dumps(value).decode().replace("</", "<\\/").replace("<!--", "<\\!--")


def _inline_css(name: str) -> str:
    """A style sheet with its images (Leaflet's layer-control icon) as data: URIs."""
    path = STATIC / name
    text = path.read_text(encoding="utf-8")

    def embed(match: re.Match[str]) -> str:
        image = path.parent / match.group(2)
        mime = "image/svg+xml" if image.suffix == ".svg" else f"image/{image.suffix.lstrip('.')}"
        return f"url(data:{mime};base64,{base64.b64encode(image.read_bytes()).decode()})"

    return _CSS_URL.sub(embed, text)


def _asset_elements(spec: MapSpec) -> list[Element]:
    if spec.inline:
        styles = [Element(f"<style>\n{_inline_css(name)}\n</style>") for name in STYLES]
        scripts = []
        for name in SCRIPTS:
            source = (STATIC / name).read_text(encoding="utf-8")
            if "</script" in source.lower():
                raise ValueError(f"{name} cannot be inlined: it contains </script")
            scripts.append(Element(f"<script>\n{source}\n</script>"))
        return styles + scripts
    assert spec.asset_url is not None, "a live map needs asset_url"
    return ([Element(f'<link rel="stylesheet" href="{spec.asset_url(name)}">') for name in STYLES]
            + [Element(f'<script src="{spec.asset_url(name)}"></script>') for name in SCRIPTS])


def _without_cdn(element: Any) -> Any:
    """Folium and its plugins link their scripts from CDNs; ours are in the page already."""
    element.default_js = []
    element.default_css = []
    return element


def build(spec: MapSpec) -> MapPage:
    """The Folium figure of one planner map."""
    page = MapPage(spec.labels.title, spec.lang)
    for i, element in enumerate(_asset_elements(spec)):
        page.header.add_child(element, name=f"civicmap_asset_{i}")
    page.html.add_child(Element(spec.header_html), name="civicmap_header")
    min_lon, min_lat, max_lon, max_lat = spec.bounds
    fmap = _without_cdn(folium.Map(location=[(min_lat + max_lat) / 2, (min_lon + max_lon) / 2], zoom_start=12,
                                   tiles=None, control_scale=True, prefer_canvas=False))
    fmap.options.update(min_zoom=5, max_zoom=19)  # for Leaflet itself, also when there is no base layer
    page.add_child(fmap, name="map")
    page.html.add_child(Element(spec.panel_html), name="civicmap_panel")
    if spec.tiles_url:
        folium.TileLayer(tiles=spec.tiles_url, attr=spec.tiles_attribution, name=spec.labels.base_map,
                         max_zoom=19, max_native_zoom=19).add_to(fmap)
    groups = {g["code"]: folium.FeatureGroup(name=g["label"], show=True).add_to(fmap) for g in spec.groups}
    heat = _without_cdn(HeatMap([], name=spec.labels.heatmap, show=False, radius=18, blur=14, min_opacity=0.35,
                                max_zoom=17, gradient=HEAT_GRADIENT))
    heat.add_to(fmap)
    choropleth = folium.FeatureGroup(name=spec.labels.choropleth, show=False).add_to(fmap)
    khans = folium.FeatureGroup(name=spec.labels.khans, show=True).add_to(fmap)
    sangkats = folium.FeatureGroup(name=spec.labels.sangkats, show=False).add_to(fmap)
    folium.LayerControl(collapsed=True, position="topright").add_to(fmap)
    fmap.fit_bounds([[min_lat, min_lon], [max_lat, max_lon]])
    config = {**spec.config, "groups": spec.groups, "colours": {g["code"]: g["colour"] for g in spec.groups},
              "pointZoom": POINT_ZOOM, "maxPoints": MAX_POINTS, "lang": spec.lang}
    fmap.add_child(PlannerLayers(_script_json(config), groups, heat, choropleth, khans, sangkats))
    return page


def render(spec: MapSpec) -> str:
    """The page's HTML."""
    return build(spec).render()


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def inline_script_hashes(html: str) -> list[str]:
    """CSP ``'sha256-…'`` sources of the page's inline scripts (Folium writes its map as one)."""
    return ["'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in _INLINE_SCRIPT.findall(html)]
