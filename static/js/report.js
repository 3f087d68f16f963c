/* civicmap report form: GPS or area, a map on request, small photos, a queue on this phone. The form is
   never posted: a report is saved in IndexedDB first, then sent by store.js (CM). Texts: civicmap-config. */
(() => {
  'use strict';
  var $ = id => document.getElementById(id);
  var cfgEl = $('civicmap-config'), form = $('report-form'), CM = self.CM;
  if (!cfgEl || !form || !CM || !self.indexedDB) return;
  var cfg = JSON.parse(cfgEl.textContent), S = cfg.strings, FIELD = cfg.mode === 'field';
  var PHONE = /^\+?[0-9][0-9 \-]{4,38}$/, EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
  var ORDER = ['category', 'location', 'landmark', 'description', 'photo', 'name', 'phone', 'email', 'consent'];
  var photos = [], working = Promise.resolve(), editing = null, timer = null, wasOffline = false;
  var map, marker, summary = null;

  function t(key, vars) {
    return (S[key] || key).replace(/%\((\w+)\)s/g, (m, n) => vars && n in vars ? vars[n] : m);
  }
  function status(code) { return S['status.' + code] ? t('status.' + code) : code; }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function button(text, fn, cls) {
    var b = el('button', text, cls || 'secondary');
    b.type = 'button';
    b.addEventListener('click', fn);
    return b;
  }
  function say(id, text) { var p = $(id); if (p) p.textContent = text || ''; }

  /* --- errors next to their fields */

  function fieldOf(name) {
    return name === 'category' ? $('category-field') : name === 'location' ? $('location-field') : $(name);
  }
  function setError(name, msg) {
    var p = $(name + '-error'), f = fieldOf(name);
    if (p) { p.textContent = msg || ''; p.hidden = !msg; }
    if (f) { if (msg) f.setAttribute('aria-invalid', 'true'); else f.removeAttribute('aria-invalid'); }
  }
  function focusField(name) {
    var f = name === 'category' ? form.querySelector('input[name=category]')
      : name === 'location' ? ($('gps-button').offsetParent ? $('gps-button') : $('area')) : $(name);
    if (!f) return;
    var d = f.closest('details');
    if (d) d.open = true;
    f.focus();
    if (f.scrollIntoView) f.scrollIntoView({block: 'center'});
  }

  /* --- location: GPS, the map, or the chosen area */

  function setFix(lon, lat, acc) {
    $('lon').value = lon.toFixed(6);
    $('lat').value = lat.toFixed(6);
    $('accuracy_m').value = Math.round(acc);
    say('gps-status', t(acc > 100 ? 'gps.poor' : 'gps.found', {metres: Math.round(acc)}));
    setError('location');
  }
  function locate(quiet) {
    if (!navigator.geolocation) return say('gps-status', t('gps.unsupported'));
    if (!quiet) say('gps-status', t('gps.locating'));
    navigator.geolocation.getCurrentPosition(p => {
      setFix(p.coords.longitude, p.coords.latitude, p.coords.accuracy);
      if (marker) { marker.setLatLng([p.coords.latitude, p.coords.longitude]); map.panTo(marker.getLatLng()); }
    }, err => {
      if (!quiet) say('gps-status', t(err.code === 1 ? 'gps.denied' : 'gps.unavailable'));
    }, {enableHighAccuracy: true, timeout: 30000, maximumAge: 60000});
  }
  function areaPoint() {
    var o = $('area').selectedOptions[0], p = o && o.getAttribute('data-p');
    return p ? p.split(',').map(Number) : null;
  }
  function loadLeaflet(box) {
    if (self.L) return Promise.resolve();
    return new Promise((ok, ko) => {
      var css = el('link');
      css.rel = 'stylesheet'; css.href = box.getAttribute('data-css');
      document.head.appendChild(css);
      var s = el('script');
      s.src = box.getAttribute('data-js'); s.onload = ok; s.onerror = ko;
      document.head.appendChild(s);
    });
  }
  function openMap() {
    var box = $('map');
    if (!navigator.onLine) return say('gps-status', t('map.offline'));
    say('gps-status', t('map.loading'));
    loadLeaflet(box).then(() => {
      var lon = parseFloat($('lon').value), lat = parseFloat($('lat').value), a = areaPoint(), zoom = 17;
      if (!isFinite(lon) || !isFinite(lat)) { lon = a ? a[0] : 104.9282; lat = a ? a[1] : 11.5564; zoom = a ? 15 : 13; }
      box.hidden = false;
      done.hidden = false;
      if (!map) {
        map = L.map(box).setView([lat, lon], zoom);
        var tiles = box.getAttribute('data-tiles');
        if (tiles) {
          L.tileLayer(tiles, {maxZoom: 19, attribution:
            '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a>'}).addTo(map);
        }
        marker = L.marker([lat, lon], {draggable: true, autoPan: true}).addTo(map);
        marker.on('dragend', placed);
        map.on('click', e => { marker.setLatLng(e.latlng); placed(); });
      } else {
        map.invalidateSize();
        map.setView([lat, lon], zoom);
        marker.setLatLng([lat, lon]);
      }
      say('gps-status', t('map.hint'));
    }, () => { say('gps-status', t('map.offline')); });
  }
  function placed() {
    var ll = marker.getLatLng();
    var mpp = 40075016 * Math.cos(ll.lat * Math.PI / 180) / Math.pow(2, map.getZoom() + 8);
    setFix(ll.lng, ll.lat, Math.max(5, mpp * 10));  // ~10 px at this zoom
  }
  var done = button(t('map.done'), () => {
    $('map').hidden = true; done.hidden = true; $('map-button').focus();
  });
  done.hidden = true;

  /* --- photos: ≤ 1280 px, ≤ 400 KB JPEG, named by sha256 */

  function decode(file) {
    if (self.createImageBitmap) {
      return createImageBitmap(file, {imageOrientation: 'from-image'})
        .catch(() => createImageBitmap(file));
    }
    return new Promise((ok, ko) => {
      var img = new Image();
      img.onload = () => { ok(img); };
      img.onerror = ko;
      img.src = URL.createObjectURL(file);
    });
  }
  function compress(file) {
    return decode(file).then(src => {
      var scale = Math.min(1, 1280 / Math.max(src.width, src.height)), c = el('canvas');
      function draw() {
        c.width = Math.max(1, Math.round(src.width * scale));
        c.height = Math.max(1, Math.round(src.height * scale));
        c.getContext('2d').drawImage(src, 0, 0, c.width, c.height);
      }
      function attempt(q) {  // lower the quality step by step, then the size
        return new Promise(ok => { c.toBlob(ok, 'image/jpeg', q); }).then(b => {
          if (!b) throw new Error('no JPEG');
          if (b.size <= 400 * 1024) { if (src.close) src.close(); return b; }
          if (q > 0.45) return attempt(q - 0.1);
          scale *= 0.75;
          draw();
          return attempt(0.8);
        });
      }
      draw();
      return attempt(0.8);
    });
  }
  function sha256(blob) {
    return new Response(blob).arrayBuffer().then(buf => crypto.subtle.digest('SHA-256', buf))
      .then(d => Array.prototype.map.call(new Uint8Array(d), x => (x + 256).toString(16).slice(1)).join(''));
  }
  function addPhotos(files) {
    setError('photo');
    return files.reduce((p, file) => {
      return p.then(() => {
        if (photos.length >= cfg.max_photos) return setError('photo', t('photo.too_many', {max: cfg.max_photos}));
        say('form-status', t('photo.compressing'));
        return compress(file).then(blob => {
          return sha256(blob).then(sha => {
            if (!photos.some(x => x.sha === sha)) photos.push({sha: sha, blob: blob});
          });
        }).catch(() => { setError('photo', t('photo.unreadable')); });
      });
    }, Promise.resolve()).then(() => { say('form-status'); previews(); });
  }
  function previews() {
    var box = $('photo-previews');
    [].forEach.call(box.querySelectorAll('img'), i => { URL.revokeObjectURL(i.src); });
    box.textContent = '';
    photos.forEach((p, i) => {
      var fig = el('figure'), img = el('img');
      img.src = URL.createObjectURL(p.blob);
      img.alt = '';
      var b = button(t('photo.remove'), () => {
        photos.splice(photos.indexOf(p), 1);
        previews();
        $('photo').focus();
      }, 'link');
      b.setAttribute('aria-label', t('photo.remove') + ' ' + (i + 1));
      fig.appendChild(img);
      fig.appendChild(b);
      box.appendChild(fig);
    });
  }

  /* --- the report: checked on the phone, kept in IndexedDB, then sent */

  function check() {
    var errs = {}, v = id => $(id).value.trim();
    var cat = form.querySelector('input[name=category]:checked');
    if (!cat) errs.category = t('form.need_category');
    var lon = parseFloat($('lon').value), lat = parseFloat($('lat').value), acc = parseFloat($('accuracy_m').value);
    var fromArea = false;
    if (!isFinite(lon) || !isFinite(lat)) {
      var a = areaPoint();
      if (a) { lon = a[0]; lat = a[1]; acc = a[2]; fromArea = true; } else errs.location = t('form.need_location');
    }
    var landmark = v('landmark'), description = v('description');
    if (fromArea && !landmark) errs.landmark = t('form.need_landmark');
    if (landmark.length > 200) errs.landmark = t('form.too_long');
    if (description.length > 2000) errs.description = t('form.too_long');
    var contact = {name: v('name'), phone: v('phone'), email: v('email')}, given = {};
    var asked = !$('contact-field').hidden && (contact.name || contact.phone || contact.email);
    if (asked) {
      if (contact.phone && !PHONE.test(contact.phone)) errs.phone = t('form.bad_phone');
      if (contact.email && !EMAIL.test(contact.email)) errs.email = t('form.bad_email');
      if (contact.name.length > 200) errs.name = t('form.too_long');
      if (!$('consent').checked) errs.consent = t('form.need_consent');
      for (var k in contact) if (contact[k]) given[k] = contact[k];
      given.consent = true;
    }
    ORDER.forEach(n => { setError(n, errs[n]); });
    var first = ORDER.filter(n => errs[n])[0];
    if (first) {
      say('form-status', t('form.fix_errors'));
      focusField(first);
      return null;
    }
    var payload = {category: cat.value};
    if (description) payload.description = description;
    if (landmark) payload.landmark = landmark;
    payload.location = {type: 'Point', coordinates: [Math.round(lon * 1e6) / 1e6, Math.round(lat * 1e6) / 1e6]};
    if (isFinite(acc)) payload.accuracy_m = Math.min(100000, Math.max(0, Math.round(acc)));
    payload.observed_at = CM.isoLocal(new Date());
    if (asked) payload.contact = given;
    return payload;
  }

  function submit(ev) {
    ev.preventDefault();
    var btn = $('submit');
    if (btn.disabled) return;
    btn.disabled = true;
    working.then(() => {
      var payload = check();
      if (!payload) return;
      var id = CM.uuid(), item = {client_id: id, op: 'create', payload: payload};
      if (photos.length) item.photos = photos.map(p => p.sha);
      var rec = {client_id: id, kind: FIELD ? 'field' : 'resident', created_at: Date.now(), item: item,
                 blobs: photos, photo_count: photos.length};
      return CM.save(rec).then(() => {
        if (editing) CM.remove(editing);
        editing = null;
        form.reset();
        photos = [];
        previews();
        say('gps-status');
        summary = null;
        say('form-status', t(navigator.onLine ? 'state.sending' : 'queue.saved_offline'));
        if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
        wake();
        send({force: true});
      }, () => { say('form-status', t('error.storage')); });
    }).then(() => { btn.disabled = false; }, () => { btn.disabled = false; });
  }

  /* Back into the form; the fixed one replaces it when saved. */
  function fix(rec) {
    var p = rec.item.payload, c = p.contact || {};
    form.reset();
    var radio = form.querySelector('input[name=category][value="' + p.category + '"]');
    if (radio) { radio.checked = true; radio.closest('details').open = true; }
    $('description').value = p.description || '';
    $('landmark').value = p.landmark || '';
    $('name').value = c.name || ''; $('phone').value = c.phone || ''; $('email').value = c.email || '';
    $('consent').checked = !!c.consent;
    setFix(p.location.coordinates[0], p.location.coordinates[1], p.accuracy_m || 0);
    photos = (rec.blobs || []).slice();
    previews();
    editing = rec.client_id;
    focusField('category');
  }

  /* --- the queue: "my reports" */

  function reason(r) {
    var e = r.error || r.photo_error;
    if (e === 'report.outside_service_area' || e === 'sync.outside_area') return t('error.outside_area');
    if (e === 'sync.client_id_conflict') return t('error.conflict');
    if (e === 'server') return t('error.server');
    var why = r.message || e || '';
    (function walk(x) {
      if (typeof x === 'string') why += ' ' + x;
      else if (x && typeof x === 'object') for (var k in x) walk(x[k]);
    })(r.errors);
    return t('error.rejected', {reason: why});
  }
  function categoryLabel(code) {
    var i = form.querySelector('input[name=category][value="' + code + '"]');
    return i && i.nextElementSibling ? i.nextElementSibling.textContent.trim() : code;
  }
  function item(r) {
    var li = el('li'), p = r.item.payload, st = r.state === 'photos' ? 'sending' : r.state;
    li.setAttribute('data-client-id', r.client_id);
    li.setAttribute('data-state', st);
    var label = r.state === 'photos'
      ? t('state.photos', {done: r.photo_count - r.pending.length, total: r.photo_count}) : t('state.' + st);
    li.appendChild(el('span', label, 'state state-' + st));
    var what = categoryLabel(p.category) + (p.description ? ' · ' + p.description.slice(0, 80) : '');
    li.appendChild(el('p', what, 'text'));
    li.appendChild(el('p', new Date(r.created_at).toLocaleString(cfg.lang === 'km' ? 'km-KH' : 'en-GB'), 'hint'));
    if (r.reference) {
      var line = el('p'), parts = t('queue.sent_reference', {reference: '\u0000'}).split('\u0000');
      line.appendChild(document.createTextNode(parts[0]));
      line.appendChild(el('span', r.reference, 'reference'));
      line.appendChild(document.createTextNode(parts[1] || ''));
      li.appendChild(line);
      if (r.status) li.appendChild(el('p', status(r.status), 'status status-' + r.status));
      var a = el('a', t('queue.track'));
      a.href = '/r/' + encodeURIComponent(r.reference);
      li.appendChild(a);
    }
    if (r.state === 'attention' || r.error === 'server' || r.photo_error) {
      li.appendChild(el('p', reason(r), r.state === 'attention' ? 'error' : 'hint'));
    }
    if (r.state === 'attention') {
      li.appendChild(button(t('queue.retry'), () => { CM.retry(r.client_id).then(() => { send({force: true}); }); }));
      li.appendChild(button(t('queue.edit'), () => { fix(r); }));
    }
    if (r.state === 'attention' || r.state === 'waiting' && !r.batch_id) {
      li.appendChild(button(t('queue.remove'), () => { CM.remove(r.client_id); }, 'link'));
    }
    return li;
  }
  var drawing = null, again = false;
  function render() {  // one at a time, again if changed meanwhile
    if (drawing) { again = true; return drawing; }
    drawing = CM.all('reports').then(all => {
      all.sort((a, b) => b.created_at - a.created_at);
      var list = $('queue-list');
      list.textContent = '';
      all.forEach(r => { list.appendChild(item(r)); });
      if ($('my-reports')) $('my-reports').hidden = !all.length;
      var left = all.filter(r => r.state === 'waiting' || r.state === 'sending').length;
      say('queue-summary', summary || (left ? t('queue.count', {count: left}) : t('queue.empty')));
      if (self.CMPage.rendered) self.CMPage.rendered(all);
    }).catch(() => {}).then(() => {
      drawing = null;
      if (again) { again = false; render(); }
    });
    return drawing;
  }
  function network() {
    var on = navigator.onLine, ns = $('network-status');
    if (!on) wasOffline = true;
    ns.hidden = on && !wasOffline;
    ns.textContent = t(on ? 'queue.online' : 'queue.offline');
    ns.className = 'banner ' + (on ? 'ok' : 'offline');
  }

  /* --- sending: now, when back online, on open, on a timer, and by Background Sync */

  function send(opts) {
    clearTimeout(timer);
    return CM.flush(opts || {}).catch(() => ({retryAt: Date.now() + 30000})).then(r => {
      timer = setTimeout(send, r.retryAt ? Math.max(1000, r.retryAt - Date.now()) : 60000);
      if (!r.offline) CM.refreshStatuses(30 * 60000);
      if (r.authFailed && self.CMPage.authFailed) self.CMPage.authFailed();
      return r;
    });
  }
  function wake() {  // Background Sync: sent even if the page is closed
    if (!navigator.serviceWorker) return;
    navigator.serviceWorker.ready.then(reg => reg.sync && reg.sync.register('civicmap-send')).catch(() => {});
  }

  /* --- start */

  [].forEach.call(form.querySelectorAll('.js-only'), e => { e.hidden = false; });
  $('map-button').hidden = false;
  $('map').parentNode.insertBefore(done, $('map').nextSibling);
  $('gps-button').addEventListener('click', () => { locate(false); });
  $('map-button').addEventListener('click', openMap);
  $('photo').addEventListener('change', e => {
    var files = [].slice.call(e.target.files);
    e.target.value = '';
    working = working.then(() => addPhotos(files));
  });
  $('consent').addEventListener('change', e => { if (e.target.checked) setError('consent'); });
  form.addEventListener('submit', submit);
  form.addEventListener('change', e => {
    if (e.target.name === 'category') setError('category');
    if (e.target.id === 'area') setError('location');
  });
  if (navigator.permissions) {
    navigator.permissions.query({name: 'geolocation'}).then(s => {
      if (s.state === 'granted') locate(true);
    }).catch(() => {});
  }
  addEventListener('online', () => { network(); send({force: true}); });
  addEventListener('offline', network);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) send({}); });
  network();
  CM.onChange(render);
  CM.setPref('lang', cfg.lang).catch(() => {});
  if (/[?&]lang=/.test(location.search)) document.cookie = 'lang=' + cfg.lang + ';path=/;max-age=31536000;samesite=lax';

  if (navigator.serviceWorker) {
    navigator.serviceWorker.onmessage = e => {
      if (e.data && e.data.type === 'shell-cached' && e.data.ok) {
        document.documentElement.setAttribute('data-offline-ready', '1');
      }
    };
    // After "load", so the precache finds the page's files in the HTTP cache.
    addEventListener('load', () => { navigator.serviceWorker.register('/sw.js', {scope: '/'}).catch(() => {}); });
    // Keep this page, in this language: the next opening needs no network.
    navigator.serviceWorker.ready.then(reg => {
      reg.active.postMessage({type: 'cache-shell', path: location.pathname.replace(/\/$/, ''), lang: cfg.lang});
    });
  }

  self.CMPage = {t: t, cfg: cfg, send: send, render: render, el: el, button: button, status: status,
                 summary: text => { summary = text; render(); }};
  render();
  send({force: true});
})();
