/* civicmap: reports kept on this phone (IndexedDB) and the sender (docs/sync-protocol.md). Shared by the pages
   and the service worker: no DOM. Saved before sent; client_id and batch_id make every resend safe. */
(self => {
  'use strict';
  var API = '/api/v1/sync/', CHUNK = 65536, TIMEOUT = 45000, LOCK = 'civicmap-send';
  var MAX_ITEMS = {resident: 20, field: 100};
  var dbp, chain = Promise.resolve(), listeners = [];
  var bc = self.BroadcastChannel ? new BroadcastChannel('civicmap') : null;

  function open() {
    if (!dbp) dbp = new Promise((ok, ko) => {
      var r = indexedDB.open('civicmap', 1);
      r.onupgradeneeded = () => {
        var db = r.result;
        db.createObjectStore('reports', {keyPath: 'client_id'});
        db.createObjectStore('batches', {keyPath: 'batch_id'});
        db.createObjectStore('prefs');
      };
      r.onsuccess = () => { var db = r.result; db.onversionchange = () => { db.close(); dbp = null; }; ok(db); };
      r.onerror = () => { dbp = null; ko(r.error); };
    });
    return dbp;
  }

  /* fn gets the stores; resolves with its result once committed */
  function tx(names, mode, fn) {
    return open().then(db => {
      return new Promise((ok, ko) => {
        var t = db.transaction(names, mode);
        var out = fn.apply(null, [].concat(names).map(n => t.objectStore(n)));
        t.oncomplete = () => { ok(out instanceof IDBRequest ? out.result : out); };
        t.onerror = t.onabort = () => { ko(t.error || new Error('aborted')); };
      });
    });
  }
  function all(name) { return tx(name, 'readonly', s => s.getAll()); }
  function getPref(key) { return tx('prefs', 'readonly', s => s.get(key)); }
  function setPref(key, value) {
    return tx('prefs', 'readwrite', s => value === undefined ? s.delete(key) : s.put(value, key));
  }

  /* Change reports in one transaction (fn returns false: skip); then(batches, changed) too. */
  function edit(ids, fn, then) {
    return tx(['reports', 'batches'], 'readwrite', (rs, bs) => {
      var out = [], left = ids.length;
      function done() { if (then) then(bs, out); }
      if (!left) done();
      ids.forEach(id => {
        var g = rs.get(id);
        g.onsuccess = () => {
          if (g.result && fn(g.result) !== false) { rs.put(g.result); out.push(g.result); }
          if (!--left) done();
        };
      });
      return out;
    }).then(out => { if (out.length) changed(); return out; });
  }

  function changed() {
    listeners.forEach(f => { f(); });
    if (bc) bc.postMessage('changed');
  }
  function onChange(f) {
    listeners.push(f);
    if (bc) bc.onmessage = () => { listeners.forEach(g => { g(); }); };
  }

  function uuid() {
    if (self.crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16)), h = [];
    b[6] = b[6] & 15 | 64; b[8] = b[8] & 63 | 128;
    for (var i = 0; i < 16; i++) h.push((b[i] + 256).toString(16).slice(1));
    return h.slice(0, 4).join('') + '-' + h.slice(4, 6).join('') + '-' + h.slice(6, 8).join('') + '-' +
      h.slice(8, 10).join('') + '-' + h.slice(10).join('');
  }

  /* The device clock with its UTC offset, e.g. 2025-03-10T12:40:00+07:00 */
  function isoLocal(d) {
    function p(n) { return (n < 10 ? '0' : '') + n; }
    var off = -d.getTimezoneOffset(), a = Math.abs(off);
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' +
      p(d.getMinutes()) + ':' + p(d.getSeconds()) + (off < 0 ? '-' : '+') + p(Math.floor(a / 60)) + ':' + p(a % 60);
  }

  /* fetch, body included, with a time limit; throws on network errors */
  function send(method, url, body, headers) {
    var ac = self.AbortController ? new AbortController() : null;
    var timer = ac && setTimeout(() => { ac.abort(); }, TIMEOUT);
    return fetch(url, {method: method, body: body, headers: headers || {}, signal: ac && ac.signal,
                       credentials: 'same-origin', cache: 'no-store'})
      .then(r => {
        return (method === 'HEAD' ? Promise.resolve('') : r.text()).then(text => {
          var json = null;
          try { json = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
          return {status: r.status, headers: r.headers, body: json || {}};
        });
      })
      .finally(() => { clearTimeout(timer); });
  }

  function gzip(text) {
    if (!self.CompressionStream) return Promise.resolve([text, {}]);
    return new Response(new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'))).blob()
      .then(b => { return [b, {'Content-Encoding': 'gzip'}]; });
  }

  /* --- saving and changing reports from the page */

  function save(rec) {
    rec.state = 'waiting';
    return tx('reports', 'readwrite', s => s.add(rec)).then(changed);
  }
  /* Not what is on its way: an unanswered batch must be resent as it was. */
  function remove(id) {
    return tx('reports', 'readwrite', s => {
      var g = s.get(id);
      g.onsuccess = () => {
        var r = g.result;
        if (r && (r.state === 'attention' || r.state === 'sent' || r.state === 'waiting' && !r.batch_id)) s.delete(id);
      };
    }).then(changed);
  }
  function retry(id) {
    return edit([id], r => {
      if (r.state !== 'attention') return false;
      r.state = 'waiting'; r.error = r.message = null;
    });
  }

  /* --- the sender */

  var NETWORK = {};  // thrown when the link or server failed: retry later, unchanged

  /* One sender at a time (tabs, service worker). opts.force: skip the back-off. */
  function flush(opts) {
    var run = () => { return pass(opts || {}); };
    if (self.navigator && navigator.locks) return navigator.locks.request(LOCK, run);
    var p = chain.then(run, run);
    chain = p.catch(() => {});
    return p;
  }

  function pass(o) {
    var res = {sent: 0, failed: 0, offline: false, retryAt: 0, authFailed: false};
    if (navigator.onLine === false) { res.offline = true; return Promise.resolve(res); }
    var token, device;
    return Promise.all([getPref('token'), getPref('device'), getPref('backoff'), all('reports')]).then(v => {
      token = v[0]; device = v[1];
      var backoff = v[2];
      if (!o.force && backoff && backoff.at > Date.now()) { res.retryAt = backoff.at; return; }
      // We hold the lock: "sending" was left by a page closed mid-send.
      var stale = v[3].filter(r => r.state === 'sending').map(r => r.client_id);
      return edit(stale, r => { r.state = 'waiting'; }).then(() => {
        var groups = [{kind: 'resident', id: 'resident', h: {}}];
        if (token && device) {
          groups.push({kind: 'field', id: String(device.device_id), h: {Authorization: 'Bearer ' + token}});
        }
        return groups.reduce((p, g) => p.then(() => pushGroup(g, res)), Promise.resolve())
          .then(() => uploadAll(groups, res))
          .then(() => setPref('backoff'));
      });
    }).catch(e => {
      if (e !== NETWORK) throw e;
      return getPref('backoff').then(b => {
        var n = res.progress ? 1 : Math.min(((b && b.n) || 0) + 1, 8);
        var delay = (res.retryAfter || Math.min(300, Math.pow(2, n))) * 1000 * (0.75 + Math.random() / 2);
        res.retryAt = Date.now() + delay;
        return setPref('backoff', {n: n, at: res.retryAt});
      });
    }).then(() => res);
  }

  function byCreated(a, b) { return a.created_at - b.created_at; }

  function pushGroup(g, res) {
    return all('batches').then(batches => {
      // First the batches on their way (same batch_id, same items), then new ones.
      return batches.filter(b => b.kind === g.kind).sort(byCreated)
        .reduce((p, b) => {
          return p.then(() => {
            if (g.stop) return;
            if (b.device !== g.id) return dissolve(b);
            return sendBatch(g, b, res, false);
          });
        }, Promise.resolve());
    }).then(function next() {
      return all('reports').then(reports => {
        var waiting = reports.filter(r => r.kind === g.kind && r.state === 'waiting' && !r.batch_id)
          .sort(byCreated).slice(0, MAX_ITEMS[g.kind]);
        if (!waiting.length || g.stop) return;
        var b = {batch_id: uuid(), kind: g.kind, device: g.id, created_at: Date.now(), client_ids: []};
        // Kept before sent: a resend after a cut reuses its batch_id.
        return edit(waiting.map(r => r.client_id), r => {
          if (r.state !== 'waiting' || r.batch_id) return false;
          r.batch_id = b.batch_id;
        }, (bs, out) => {
          b.client_ids = out.map(r => r.client_id);
          if (out.length) bs.add(b);
        }).then(out => out.length && sendBatch(g, b, res, true)).then(next);
      });
    });
  }

  function dissolve(b) {
    return edit(b.client_ids, r => {
      if (r.batch_id !== b.batch_id) return false;
      r.batch_id = null; r.state = 'waiting';
    }, bs => { bs.delete(b.batch_id); });
  }

  function sendBatch(g, b, res, fresh) {
    var items;
    return tx('reports', 'readonly', s => b.client_ids.map(id => s.get(id))).then(reqs => {
      var recs = reqs.map(r => r.result);
      if (recs.some(r => !r)) return dissolve(b);
      items = recs.map(r => r.item);
      return edit(b.client_ids, r => { r.state = 'sending'; })
        .then(() => gzip(JSON.stringify({device_id: g.id, batch_id: b.batch_id, sent_at: isoLocal(new Date()),
                                          items: items})))
        .then(z => {
          var h = Object.assign({'Content-Type': 'application/json'}, z[1], g.h);
          return send('POST', API + 'batches', z[0], h).catch(() => null);
        })
        .then(r => answer(g, b, r, res, fresh));
    });
  }

  function mark(b, fn, drop) {
    return edit(b.client_ids, r => {
      if (r.batch_id !== b.batch_id) return false;
      return fn(r);
    }, drop ? bs => { bs.delete(b.batch_id); } : null);
  }

  function attention(b, r, res) {
    res.failed += b.client_ids.length;
    return mark(b, x => {
      x.state = 'attention'; x.batch_id = null;
      x.error = r.body.error || 'http.' + r.status; x.message = r.body.message;
    }, true);
  }

  function answer(g, b, r, res, fresh) {
    if (!r || r.status >= 500 || r.status === 429 || r.status === 408) {
      // Unknown outcome: resend the same batch later.
      if (r) res.retryAfter = +r.headers.get('Retry-After') || 0;
      return mark(b, x => { x.state = 'waiting'; x.error = r && r.status >= 500 ? 'server' : null; })
        .then(() => { throw NETWORK; });
    }
    var code = r.body.error;
    if (r.status === 200) return results(b, r.body.results || [], res);
    if (r.status === 401 && g.kind === 'field') {
      // Token refused: reports stay; field mode asks to sign in.
      res.authFailed = true;
      return mark(b, x => { x.state = 'waiting'; })
        .then(() => Promise.all([setPref('token'), setPref('auth_failed', true)]))
        .then(() => { g.stop = true; });
    }
    if (!fresh && (code === 'sync.batch_conflict' || code === 'sync.device_mismatch')) return dissolve(b);
    if (r.status === 413 && b.client_ids.length > 1) return split(g, b, res);
    return attention(b, r, res);
  }

  function split(g, b, res) {
    var h = Math.ceil(b.client_ids.length / 2);
    var parts = [b.client_ids.slice(0, h), b.client_ids.slice(h)].map(ids =>
      ({batch_id: uuid(), kind: b.kind, device: b.device, created_at: b.created_at, client_ids: ids}));
    return edit(b.client_ids, r => {
      r.batch_id = parts[parts[0].client_ids.indexOf(r.client_id) >= 0 ? 0 : 1].batch_id; r.state = 'waiting';
    }, bs => { bs.delete(b.batch_id); parts.forEach(p => { bs.add(p); }); })
      .then(() => sendBatch(g, parts[0], res, true))
      .then(() => sendBatch(g, parts[1], res, true));
  }

  function results(b, list, res) {
    var by = {};
    res.progress = true;
    list.forEach(x => { by[x.client_id] = x; });
    return edit(b.client_ids, r => {
      var x = by[r.client_id];
      r.batch_id = null;
      if (!x) { r.state = 'waiting'; return; }
      if (x.result === 'created' || x.result === 'unchanged') {
        var have = (r.blobs || []).map(p => p.sha);
        r.pending = (x.missing_photos || []).filter(s => have.indexOf(s) >= 0);
        r.reference = x.reference; r.id = x.id; r.version = x.version; r.error = r.message = null;
        r.sent_at = Date.now();
        r.state = r.pending.length ? 'photos' : 'sent';
        if (!r.pending.length) r.blobs = [];
        res.sent++;
      } else {
        r.state = 'attention'; r.error = x.error; r.message = x.message; r.errors = x.errors;
        res.failed++;
      }
    }, bs => { bs.delete(b.batch_id); });
  }

  /* --- photos: HEAD for the stored offset, then PUT 64 KiB pieces from there */

  function uploadAll(groups, res) {
    return all('reports').then(reports => {
      return reports.filter(r => r.state === 'photos').sort(byCreated).reduce((p, r) => {
        var g = groups.filter(x => x.kind === r.kind && !x.stop)[0];
        if (!g) return p;
        return r.pending.slice().reduce((q, sha) => {
          var photo = r.blobs.filter(x => x.sha === sha)[0];
          return q.then(() => { return photo ? upload(sha, photo.blob, g.h, res) : {}; }).then(out => {
            return edit([r.client_id], x => {
              x.pending = (x.pending || []).filter(s => s !== sha);
              if (out.error) { x.photo_error = out.error; x.message = out.message; }
              if (!x.pending.length) { x.state = 'sent'; x.blobs = []; }
            });
          });
        }, p);
      }, Promise.resolve());
    });
  }

  function upload(sha, blob, auth, res) {
    var url = API + 'photos/' + sha, total = blob.size, off = 0, tries = 0, restarted = false;
    function check(r) {
      if (!r || r.status >= 500 || r.status === 429 || r.status === 408 || r.status === 403 || r.status === 401) {
        throw NETWORK;  // 403: the report listing it is not there yet
      }
      return r;
    }
    function step() {
      if (off >= total) return {};
      if (++tries > 4 * Math.ceil(total / CHUNK) + 8) throw NETWORK;
      var end = Math.min(off + CHUNK, total);
      var h = Object.assign({'Content-Type': 'application/octet-stream',
                             'Content-Range': 'bytes ' + off + '-' + (end - 1) + '/' + total}, auth);
      return send('PUT', url, blob.slice(off, end), h).catch(() => null).then(check).then(r => {
        var at = r.headers.get('Upload-Offset');
        if (r.status === 200 || r.status === 409 && r.body.error === 'sync.upload_gap' && at !== null) {
          res.progress = true;
          if (r.headers.get('Upload-Complete') === '?1') return {};
          off = +at;
          return step();
        }
        if (r.body.error === 'sync.photo_hash_mismatch' && !restarted) { restarted = true; off = 0; return step(); }
        return {error: r.body.error || 'http.' + r.status, message: r.body.message};  // unusable: no retry
      });
    }
    return send('HEAD', url, null, auth).catch(() => null).then(r => {
      if (r && r.status === 404) return step();
      check(r);
      if (r.headers.get('Upload-Complete') === '?1') return {};
      off = +r.headers.get('Upload-Offset') || 0;
      return step();
    });
  }

  /* --- "my reports": the city's status of what this phone sent */

  function refreshStatuses(maxAge) {
    if (navigator.onLine === false) return Promise.resolve();
    var fresh = r => r.checked_at && Date.now() - r.checked_at < maxAge;
    return all('reports').then(reports => reports
      // open residents' reports (field mode pulls)
      .filter(r => r.reference && r.kind !== 'field' && !/^(resolved|rejected|duplicate)$/.test(r.status) && !fresh(r))
      .sort((a, b) => (a.checked_at || 0) - (b.checked_at || 0)).slice(0, 5)
      .reduce((p, r) => p.then(() => send('GET', '/api/v1/reports/' + encodeURIComponent(r.reference)).then(x => {
        if (x.status === 200 || x.status === 404) {
          return edit([r.client_id], y => { y.checked_at = Date.now(); y.status = x.body.status || y.status; });
        }
      })), Promise.resolve())).catch(() => {});
  }

  self.CM = {open: open, tx: tx, all: all, getPref: getPref, setPref: setPref, edit: edit, save: save, remove: remove,
             retry: retry, flush: flush, refreshStatuses: refreshStatuses, onChange: onChange, changed: changed,
             uuid: uuid, isoLocal: isoLocal, send: send};
})(self);
