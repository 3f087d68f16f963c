/* civicmap planner map: fills the layers of the Folium map from civicmap's own endpoints.

   The page itself carries no report data (its size does not depend on how many
   reports there are): this script reads the filter panel, asks the layer
   endpoints for what the view shows, and redraws the layers when the map moves
   or a filter changes, without rebuilding the page. An offline map made by
   `civicmap map --out` hands the same script its data inline instead.

   - Per category group: count bubbles on a grid (from /api/v1/layers/heatmap)
     below the point zoom, single reports in clusters from the point zoom on.
   - Heatmap: density points from the heatmap endpoint.
   - Choropleth: open reports per sangkat (/api/v1/layers/areas), with the
     median days to resolve in the tooltip.
   - Khan and sangkat boundaries (/api/v1/areas), fetched once.

   Report text never goes through innerHTML: popups and tooltips are built
   with textContent. */
(function () {
  "use strict";

  var CHOROPLETH_COLOURS = ["#fef0d9", "#fdcc8a", "#fc8d59", "#e34a33", "#b30000"];
  var MOVE_DELAY_MS = 250;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_, key) { return values[key]; });
  }

  function localDate(value, lang) {
    if (!value) { return ""; }
    var date = new Date(value);
    if (isNaN(date.getTime())) { return ""; }
    return date.toLocaleDateString(lang === "km" ? "km-KH" : "en-GB",
                                   {year: "numeric", month: "short", day: "numeric", timeZone: "Asia/Phnom_Penh"});
  }

  function CivicMap(map, cfg, handles) {
    this.map = map;
    this.cfg = cfg;
    this.handles = handles;
    this.numbers = new Intl.NumberFormat(cfg.lang === "km" ? "km-KH" : "en-GB");
    this.groupIndex = {};
    this.clusters = {};
    this.pending = {};
    this.areasCache = {};
    var self = this;
    cfg.groups.forEach(function (group, i) {
      self.groupIndex[group.code] = i;
      self.clusters[group.code] = L.markerClusterGroup({
        showCoverageOnHover: false, maxClusterRadius: 45, chunkedLoading: true,
        iconCreateFunction: function (cluster) { return self.bubbleIcon(group, cluster.getChildCount(), 0); }
      });
      handles.groups[group.code].addLayer(self.clusters[group.code]);
    });
    this.bubbles = {};
    cfg.groups.forEach(function (group) {
      self.bubbles[group.code] = L.layerGroup();
      handles.groups[group.code].addLayer(self.bubbles[group.code]);
    });
    this.panel = document.getElementById("cm-panel");
    this.form = document.getElementById("cm-filters");
    this.status = document.getElementById("cm-status");
    this.choroplethLegend = document.getElementById("cm-choropleth-legend");
    this.addControls();
  }

  CivicMap.prototype.addControls = function () {
    var self = this;
    var Holder = L.Control.extend({
      onAdd: function () {
        var node = this.options.node;
        node.hidden = false;
        L.DomEvent.disableClickPropagation(node);
        L.DomEvent.disableScrollPropagation(node);
        return node;
      }
    });
    if (this.panel) { new Holder({position: "topleft", node: this.panel}).addTo(this.map); }
    var legend = document.getElementById("cm-legend");
    if (legend) { new Holder({position: "bottomright", node: legend}).addTo(this.map); }
    var toggle = document.getElementById("cm-panel-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        var body = document.getElementById("cm-panel-body");
        var open = body.hidden;
        body.hidden = !open;
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
      if (window.matchMedia && window.matchMedia("(max-width: 40rem)").matches) { toggle.click(); }
    }
  };

  // --- filters ----------------------------------------------------------------------------------------------------

  CivicMap.prototype.readFilters = function () {
    var params = new URLSearchParams();
    if (!this.form) { return params; }
    var data = new FormData(this.form);
    var category = data.get("category");
    if (category) { params.set("category", category); }
    var statuses = data.getAll("status");
    if (statuses.length) { params.set("status", statuses.join(",")); }
    var since = data.get("since");
    if (since) { params.set("since", since + "T00:00:00+07:00"); }
    var until = data.get("until");
    if (until) {
      var end = new Date(until + "T00:00:00Z");
      end.setUTCDate(end.getUTCDate() + 1);  // the day chosen is included
      params.set("until", end.toISOString().slice(0, 10) + "T00:00:00+07:00");
    }
    params.set("area", data.get("area") || this.cfg.city.code);
    return params;
  };

  CivicMap.prototype.restoreFilters = function () {
    if (!this.form) { return; }
    var query = new URLSearchParams(window.location.search);
    var form = this.form;
    ["category", "area", "since", "until"].forEach(function (name) {
      if (query.has(name) && form.elements[name]) { form.elements[name].value = query.get(name); }
    });
    if (query.has("status")) {
      var chosen = query.get("status").split(",");
      Array.prototype.forEach.call(form.querySelectorAll("input[name=status]"), function (box) {
        box.checked = chosen.indexOf(box.value) >= 0;
      });
    }
  };

  CivicMap.prototype.rememberFilters = function () {
    if (!this.form || !window.history.replaceState) { return; }
    var data = new FormData(this.form);
    var query = new URLSearchParams(window.location.search);
    ["category", "area", "since", "until"].forEach(function (name) {
      if (data.get(name)) { query.set(name, data.get(name)); } else { query.delete(name); }
    });
    var statuses = data.getAll("status");
    if (statuses.length) { query.set("status", statuses.join(",")); } else { query.delete("status"); }
    var text = query.toString();
    window.history.replaceState(null, "", window.location.pathname + (text ? "?" + text : ""));
  };

  // --- fetching ---------------------------------------------------------------------------------------------------

  CivicMap.prototype.fetchJSON = function (name, url) {
    if (this.pending[name]) { this.pending[name].abort(); }
    var controller = window.AbortController ? new AbortController() : null;
    this.pending[name] = controller;
    var self = this;
    return fetch(url, {credentials: "same-origin", signal: controller ? controller.signal : undefined})
      .then(function (response) {
        if (!response.ok) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            var error = new Error(body.message || response.statusText);
            error.status = response.status;
            throw error;
          });
        }
        return response.json();
      })
      .finally(function () { if (self.pending[name] === controller) { self.pending[name] = null; } });
  };

  CivicMap.prototype.viewBbox = function () {
    var b = this.map.getBounds();
    var clamp = function (v, lo, hi) { return Math.max(lo, Math.min(hi, v)); };
    return [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -85, 85),
            clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -85, 85)].map(function (v) { return v.toFixed(5); }).join(",");
  };

  CivicMap.prototype.say = function (text, isError) {
    if (!this.status) { return; }
    this.status.textContent = text;
    this.status.classList.toggle("cm-error", Boolean(isError));
  };

  CivicMap.prototype.failed = function (error) {
    if (error && error.name === "AbortError") { return; }
    this.say(format(this.cfg.strings.failed, {reason: (error && error.message) || ""}), true);
  };

  // --- report layers ----------------------------------------------------------------------------------------------

  CivicMap.prototype.bubbleIcon = function (group, count, slot) {
    var size = Math.round(Math.min(46, 22 + Math.sqrt(count) * 1.6));
    var offsets = [[-1, -1], [1, -1], [-1, 1], [1, 1]];
    var shift = slot >= 0 ? offsets[slot % 4] : [0, 0];
    var text = count >= 10000 ? Math.round(count / 1000) + "k" : String(count);
    var html = '<span class="cm-bubble" style="background:' + this.cfg.colours[group.code] + '">' + text + "</span>";
    return L.divIcon({
      html: html, className: "cm-bubble-icon",
      iconSize: [size, size],
      iconAnchor: [size / 2 - shift[0] * size * 0.45, size / 2 - shift[1] * size * 0.45]
    });
  };

  CivicMap.prototype.clearReports = function () {
    var self = this;
    this.cfg.groups.forEach(function (group) {
      self.clusters[group.code].clearLayers();
      self.bubbles[group.code].clearLayers();
    });
  };

  CivicMap.prototype.loadReports = function (filters) {
    var self = this;
    var zoom = this.map.getZoom();
    var params = new URLSearchParams(filters);
    params.set("bbox", this.viewBbox());
    if (zoom >= this.cfg.pointZoom) {
      params.set("limit", String(this.cfg.maxPoints));
      return this.fetchJSON("reports", this.cfg.endpoints.points + "?" + params).then(function (collection) {
        self.clearReports();
        self.drawPoints(collection.features.map(function (f) { return self.record(f); }));
        var shown = self.numbers.format(collection.returned);
        if (collection.next_cursor) {
          self.say(format(self.cfg.strings.showingSome, {shown: shown, total: self.numbers.format(collection.matched)}));
        } else {
          self.say(format(self.cfg.strings.showingAll, {n: shown}));
        }
      });
    }
    params.set("format", "grid");
    params.set("cells", "28");
    return this.fetchJSON("grid", this.cfg.endpoints.grid + "?" + params).then(function (grid) {
      self.clearReports();
      self.drawGrid(grid);
      self.say(format(self.cfg.strings.counted, {n: self.numbers.format(grid.total)}));
    });
  };

  CivicMap.prototype.drawGrid = function (grid) {
    var self = this;
    var columns = grid.columns;
    this.cfg.groups.forEach(function (group, slot) {
      var column = columns.indexOf(group.code);
      if (column < 0) { return; }
      var layer = self.bubbles[group.code];
      grid.cells.forEach(function (cell) {
        var count = cell[column];
        if (!count) { return; }
        var marker = L.marker([cell[1], cell[0]], {icon: self.bubbleIcon(group, count, slot), keyboard: false});
        marker.bindTooltip(format(self.cfg.strings.cellCount, {n: self.numbers.format(count), category: group.label}));
        marker.on("click", function () { self.map.setView(marker.getLatLng(), Math.min(self.map.getZoom() + 2, self.cfg.pointZoom)); });
        layer.addLayer(marker);
      });
    });
  };

  // One shape for a report, from a GeoJSON feature (live) or an inline row (offline map).
  CivicMap.prototype.record = function (feature) {
    var p = feature.properties;
    var lang = this.cfg.lang;
    return {
      lat: feature.geometry.coordinates[1], lon: feature.geometry.coordinates[0],
      reference: p.reference, category: p.category, status: p.status,
      observed: p.observed_at, received: p.received_at,
      place: [lang === "km" && p.sangkat_km ? p.sangkat_km : p.sangkat,
              lang === "km" && p.khan_km ? p.khan_km : p.khan].filter(Boolean).join(", "),
      photo: p.photos && p.photos.length ? p.photos[0] : null,
      photoCount: p.photo_count || 0,
      hidden: Boolean(p.hidden), source: p.source || null, staffUrl: p.staff_url || null
    };
  };

  CivicMap.prototype.drawPoints = function (records) {
    var self = this;
    var perGroup = {};
    records.forEach(function (r) {
      var group = r.category.split(".")[0];
      if (!(group in self.clusters)) { return; }
      var marker = L.circleMarker([r.lat, r.lon], {
        radius: 7, weight: r.hidden ? 3 : 1.5, color: r.hidden ? "#000" : "#fff",
        dashArray: r.hidden ? "3 2" : null, fillColor: self.cfg.colours[group], fillOpacity: 0.9,
        className: "cm-report cm-status-" + r.status
      });
      marker.bindPopup(function () { return self.popup(r); }, {minWidth: 200, maxWidth: 260});
      (perGroup[group] = perGroup[group] || []).push(marker);
    });
    Object.keys(perGroup).forEach(function (group) { self.clusters[group].addLayers(perGroup[group]); });
  };

  CivicMap.prototype.popup = function (r) {
    var cfg = this.cfg;
    var box = el("div", "cm-popup");
    var title = el("div", "cm-popup-title");
    var link = el("a", null, r.reference);
    link.href = r.staffUrl || (cfg.trackUrl + encodeURIComponent(r.reference));
    if (!cfg.offline) { link.target = "_blank"; link.rel = "noopener"; }
    title.appendChild(link);
    if (r.hidden) { title.appendChild(el("span", "cm-badge", cfg.strings.hidden)); }
    box.appendChild(title);
    box.appendChild(el("div", "cm-popup-category", cfg.categoryLabels[r.category] || r.category));
    var status = el("div", "cm-popup-status");
    status.appendChild(el("span", "cm-status cm-status-" + r.status, cfg.statusLabels[r.status] || r.status));
    box.appendChild(status);
    if (r.place) { box.appendChild(el("div", "cm-popup-place", r.place)); }
    var when = localDate(r.observed || r.received, cfg.lang);
    if (when) { box.appendChild(el("div", "cm-popup-date", format(cfg.strings.observed, {date: when}))); }
    if (r.source && cfg.sourceLabels) {
      box.appendChild(el("div", "cm-popup-source", format(cfg.strings.source, {source: cfg.sourceLabels[r.source] || r.source})));
    }
    if (r.photo && !cfg.offline) {
      var img = el("img", "cm-thumb");
      img.src = r.photo + (r.photo.indexOf("?") < 0 ? "?" : "&") + "size=thumb";
      img.alt = cfg.strings.photoAlt;
      img.width = 240; img.height = 180;
      img.loading = "lazy";
      box.appendChild(img);
      if (r.photoCount > 1) { box.appendChild(el("div", "cm-popup-photos", format(cfg.strings.photos, {n: r.photoCount}))); }
    }
    return box;
  };

  // --- heatmap ----------------------------------------------------------------------------------------------------

  CivicMap.prototype.loadHeat = function (filters) {
    var heat = this.handles.heat;
    if (!heat || !this.map.hasLayer(heat)) { return Promise.resolve(); }
    var params = new URLSearchParams(filters);
    params.set("bbox", this.viewBbox());
    params.set("format", "points");
    params.set("zoom", String(Math.min(this.map.getZoom(), 18)));
    return this.fetchJSON("heat", this.cfg.endpoints.grid + "?" + params).then(function (points) {
      heat.setLatLngs(points);
    });
  };

  // --- choropleth and boundaries ----------------------------------------------------------------------------------

  // Quantile classes of the positive values: the lower bound of each class, ascending (at most five).
  CivicMap.prototype.classes = function (values) {
    var sorted = values.filter(function (v) { return v > 0; }).sort(function (a, b) { return a - b; });
    var starts = [];
    for (var i = 0; i < CHOROPLETH_COLOURS.length && sorted.length; i++) {
      var start = sorted[Math.floor(sorted.length * i / CHOROPLETH_COLOURS.length)];
      if (!starts.length || start > starts[starts.length - 1]) { starts.push(start); }
    }
    return starts;
  };

  // The colour of a class: the darkest is always the top class, however few classes there are.
  CivicMap.prototype.classColour = function (index, starts) {
    return CHOROPLETH_COLOURS[index + CHOROPLETH_COLOURS.length - starts.length];
  };

  CivicMap.prototype.colourFor = function (value, starts) {
    if (!value || !starts.length) { return null; }
    var index = 0;
    while (index + 1 < starts.length && value >= starts[index + 1]) { index++; }
    return this.classColour(index, starts);
  };

  CivicMap.prototype.areaName = function (p) {
    return this.cfg.lang === "km" && p.name_km ? p.name_km : p.name_en;
  };

  CivicMap.prototype.drawChoropleth = function (collection) {
    var self = this;
    var group = this.handles.choropleth;
    group.clearLayers();
    var starts = this.classes(collection.features.map(function (f) { return f.properties.open; }));
    var layer = L.geoJSON(collection, {
      style: function (f) {
        var fill = self.colourFor(f.properties.open, starts);
        return {color: "#6b4226", weight: 0.8, fillColor: fill || "#ffffff", fillOpacity: fill ? 0.55 : 0.05};
      },
      onEachFeature: function (f, shape) {
        var p = f.properties;
        shape.bindTooltip(function () {
          var box = el("div", "cm-area-tip");
          box.appendChild(el("strong", null, self.areaName(p)));
          box.appendChild(el("div", null, format(self.cfg.strings.openReports, {n: self.numbers.format(p.open)})));
          var median = p.median_days_to_resolve;
          box.appendChild(el("div", null, median === null || median === undefined ? self.cfg.strings.noMedian
            : format(self.cfg.strings.medianResolve, {days: self.numbers.format(Math.round(median * 10) / 10)})));
          return box;
        }, {sticky: true});
      }
    });
    group.addLayer(layer);
    this.drawChoroplethLegend(starts);
  };

  CivicMap.prototype.drawChoroplethLegend = function (starts) {
    var box = this.choroplethLegend;
    if (!box) { return; }
    box.textContent = "";
    var self = this;
    var n = this.numbers;
    starts.forEach(function (low, i) {
      var row = el("div", "cm-legend-row");
      var swatch = el("span", "cm-swatch");
      swatch.style.background = self.classColour(i, starts);
      row.appendChild(swatch);
      var next = starts[i + 1];
      var label = next === undefined ? n.format(low) + "+"
        : (next - 1 > low ? n.format(low) + "–" + n.format(next - 1) : n.format(low));
      row.appendChild(el("span", null, label));
      box.appendChild(row);
    });
    if (!starts.length) { box.appendChild(el("div", "cm-legend-row", this.cfg.strings.noOpen)); }
  };

  CivicMap.prototype.loadChoropleth = function (filters) {
    var group = this.handles.choropleth;
    if (!group || !this.map.hasLayer(group)) { return Promise.resolve(); }
    var params = new URLSearchParams(filters);
    params.set("level", "commune");
    var key = params.toString();
    if (this.areasKey === key) { return Promise.resolve(); }
    var self = this;
    return this.fetchJSON("areas", this.cfg.endpoints.areas + "?" + params).then(function (collection) {
      self.areasKey = key;
      self.drawChoropleth(collection);
    });
  };

  CivicMap.prototype.drawBoundaries = function (group, collection, weight, dash) {
    var self = this;
    group.clearLayers();
    group.addLayer(L.geoJSON(collection, {
      interactive: true,
      style: function () { return {color: "#37474f", weight: weight, dashArray: dash, fill: false}; },
      onEachFeature: function (f, shape) {
        shape.bindTooltip(function () { return el("span", null, self.areaName(f.properties)); }, {sticky: true});
      }
    }));
  };

  CivicMap.prototype.loadBoundaries = function () {
    var self = this;
    var jobs = [];
    [["khans", "district", 2.2, null], ["sangkats", "commune", 0.8, "4 3"]].forEach(function (spec) {
      var group = self.handles[spec[0]];
      if (!group || self["loaded_" + spec[0]] || !self.map.hasLayer(group)) { return; }
      self["loaded_" + spec[0]] = true;
      var url = self.cfg.endpoints.boundaries + "?level=" + spec[1];
      jobs.push(self.fetchJSON(spec[0], url).then(function (collection) {
        self.drawBoundaries(group, collection, spec[2], spec[3]);
      }, function (error) { self["loaded_" + spec[0]] = false; throw error; }));
    });
    return Promise.all(jobs);
  };

  // --- wiring -----------------------------------------------------------------------------------------------------

  CivicMap.prototype.refresh = function (what) {
    var self = this;
    var filters = this.readFilters().toString();
    var jobs = [];
    if (what.reports) { jobs.push(this.loadReports(filters)); }
    if (what.heat) { jobs.push(this.loadHeat(filters)); }
    if (what.areas) { jobs.push(this.loadChoropleth(filters)); }
    jobs.push(this.loadBoundaries());
    if (this.panel) { this.panel.setAttribute("aria-busy", "true"); }
    return Promise.all(jobs).then(function () {
      document.documentElement.setAttribute("data-map-ready", "true");
    }, function (error) { self.failed(error); }).finally(function () {
      if (self.panel) { self.panel.setAttribute("aria-busy", "false"); }
    });
  };

  CivicMap.prototype.start = function () {
    var self = this;
    var timer = null;
    var all = {reports: true, heat: true, areas: true};
    this.restoreFilters();
    this.map.on("moveend", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { self.refresh({reports: true, heat: true}); }, MOVE_DELAY_MS);
    });
    this.map.on("overlayadd", function (event) {
      if (event.layer === self.handles.heat) { self.refresh({heat: true}); }
      else if (event.layer === self.handles.choropleth) { self.refresh({areas: true}); }
      else { self.refresh({}); }
    });
    if (this.form) {
      this.form.addEventListener("change", function () { self.rememberFilters(); self.refresh(all); });
      this.form.addEventListener("submit", function (event) { event.preventDefault(); self.rememberFilters(); self.refresh(all); });
      this.form.addEventListener("reset", function () {
        setTimeout(function () { self.rememberFilters(); self.refresh(all); }, 0);
      });
    }
    return this.refresh(all);
  };

  // --- offline map ------------------------------------------------------------------------------------------------

  CivicMap.prototype.startOffline = function (data) {
    var self = this;
    var names = data.areaNames || {};
    var records = data.reports.map(function (row) {
      var commune = names[row[6]] || {};
      var district = names[row[7]] || {};
      return {lat: row[1], lon: row[0], reference: row[2], category: row[3], status: row[4], observed: row[5],
              place: [self.areaName(commune), self.areaName(district)].filter(function (s) { return s; }).join(", ")};
    });
    this.drawPoints(records);
    if (this.handles.heat) {
      this.handles.heat.setLatLngs(records.map(function (r) { return [r.lat, r.lon, 1]; }));
    }
    if (data.choropleth) { this.drawChoropleth(data.choropleth); }
    if (data.khans && this.handles.khans) { this.drawBoundaries(this.handles.khans, data.khans, 2.2, null); }
    if (data.sangkats && this.handles.sangkats) { this.drawBoundaries(this.handles.sangkats, data.sangkats, 0.8, "4 3"); }
    document.documentElement.setAttribute("data-map-ready", "true");
  };

  window.CivicMap = {
    init: function (map, cfg, handles) {
      var planner = new CivicMap(map, cfg, handles);
      window.civicmapPlanner = planner;
      if (cfg.offline) { planner.startOffline(cfg.offline); } else { planner.start(); }
      return planner;
    }
  };
})();
