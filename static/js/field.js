/* civicmap field mode: a digital ambassador's phone. Device sign-in (token typed, or the provisioning link
   /field#device-token=dev_…), many reports pushed with the device token, sync with progress, and the
   area's updates pulled from the change feed. Signing out keeps the reports not yet sent. */
(() => {
  'use strict';
  var P = self.CMPage, CM = self.CM;
  if (!P) return;
  var $ = id => document.getElementById(id);
  var t = P.t, lang = P.cfg.lang, watching = null;

  function deviceLabel(d) {
    var area = d.area ? ' · ' + (lang === 'km' && d.area.name_km ? d.area.name_km : d.area.name_en) : '';
    return (d.name || '') + ' (#' + d.device_id + ')' + area;
  }
  function showError(msg) {
    var p = $('device-token-error');
    p.textContent = msg || '';
    p.hidden = !msg;
    if (msg) { $('device-token').setAttribute('aria-invalid', 'true'); $('device-token').focus(); }
    else $('device-token').removeAttribute('aria-invalid');
  }
  function show(device) {
    $('device-signin').hidden = !!device;
    $('device-panel').hidden = !device;
    $('device-status').textContent = device ? t('field.signed_in', {device: deviceLabel(device)}) : '';
    if (!device) return;
    updates();
  }

  function signIn(token) {
    showError();
    token = (token || '').trim();
    if (!token) return showError(t('field.sign_in_failed'));
    return CM.send('GET', '/api/v1/sync/device', null, {Authorization: 'Bearer ' + token}).then(r => {
      if (r.status !== 200) {
        $('device-token').value = token;
        return showError(t(r.status === 401 || r.status === 403 ? 'field.sign_in_failed' : 'error.server'));
      }
      return Promise.all([CM.setPref('token', token), CM.setPref('device', r.body), CM.setPref('auth_failed')])
        .then(() => {
          $('device-token').value = '';
          show(r.body);
          P.send({force: true});
        });
    }, () => {
      $('device-token').value = token;
      showError(t('field.sign_in_offline'));
    });
  }

  function signOut() {
    // Only the token and what came with it go: reports not yet sent stay on the phone.
    return Promise.all(['token', 'device', 'cursor', 'updates'].map(k => CM.setPref(k)))
      .then(() => { show(null); $('device-token').focus(); });
  }
  P.authFailed = () => {
    CM.setPref('device').then(() => { show(null); showError(t('field.sign_in_failed')); });
  };

  /* --- sync with progress: what was waiting when the button was pressed, until each has a result */

  P.rendered = all => {
    if (!watching) return;
    var mine = all.filter(r => watching.indexOf(r.client_id) >= 0);
    var done = mine.filter(r => r.state === 'sent' || r.state === 'attention').length;
    var bar = $('sync-progress');
    bar.max = Math.max(1, watching.length);
    bar.value = done;
    if (done < watching.length) {
      P.summary(t('field.syncing', {done: done, total: watching.length}));
    } else {
      var failed = mine.filter(r => r.state === 'attention').length;
      watching = null;
      P.summary(t('field.sync_done', {sent: done - failed, failed: failed}));
    }
  };
  function sync() {
    var btn = $('sync-button');
    btn.disabled = true;
    CM.all('reports').then(all => {
      watching = all.filter(r => r.state !== 'sent').map(r => r.client_id);
      $('sync-progress').hidden = false;
      P.render();
      return P.send({force: true});
    }).then(r => {
      btn.disabled = false;
      if (r && r.offline) { watching = null; P.summary(t('queue.offline')); }
      return P.render();
    }, () => { btn.disabled = false; });
  }

  /* --- pull: the area's changes since the kept cursor */

  function updates(list) {
    return (list ? Promise.resolve(list) : CM.getPref('updates')).then(u => {
      var ul = $('updates-list');
      ul.textContent = '';
      Object.keys(u || {}).map(k => u[k])
        .sort((a, b) => a.updated_at < b.updated_at ? 1 : -1)
        .forEach(x => {
          var li = P.el('li'), a = P.el('a', x.reference, 'reference');
          li.setAttribute('data-reference', x.reference);
          a.href = '/r/' + encodeURIComponent(x.reference);
          li.appendChild(a);
          li.appendChild(document.createTextNode(' '));
          li.appendChild(P.el('span', P.status(x.status), 'status status-' + x.status));
          li.appendChild(P.el('p', x.label, 'text'));
          li.appendChild(P.el('p', new Date(x.updated_at).toLocaleString(lang === 'km' ? 'km-KH' : 'en-GB'), 'hint'));
          ul.appendChild(li);
        });
    });
  }
  function pull() {
    var btn = $('pull-button'), status = $('pull-status'), seen = {}, token, u;
    btn.disabled = true;
    status.textContent = '';
    return Promise.all([CM.getPref('token'), CM.getPref('cursor'), CM.getPref('updates')]).then(v => {
      token = v[0]; u = v[2] || {};
      function page(cursor, n) {
        var url = '/api/v1/sync/changes?limit=200' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
        return CM.send('GET', url, null, {Authorization: 'Bearer ' + token}).then(r => {
          if (r.status === 401) { P.authFailed(); return; }
          if (r.status === 400 && cursor) return page(null, n);  // a cursor from elsewhere: start over (keyed by id)
          if (r.status !== 200) { status.textContent = t('error.server'); return; }
          (r.body.items || []).forEach(it => {
            if (it.kind !== 'report') return;
            if (it.removed || !it.report) { delete u[it.id]; return; }
            var x = it.report, old = u[it.id];
            if (old && old.version > x.version) return;
            seen[it.id] = 1;
            u[it.id] = {reference: x.reference, status: x.status, version: x.version, updated_at: x.updated_at,
                        label: (lang === 'km' && x.category_label_km) || x.category_label_en || x.category};
          });
          var keep = Object.keys(u).sort((a, b) => u[a].updated_at < u[b].updated_at ? 1 : -1);
          keep.slice(200).forEach(k => { delete u[k]; });
          // The queue shows the city's status too (a report's id is its client_id).
          var ids = (r.body.items || []).filter(it => u[it.id]).map(it => it.id);
          return Promise.all([CM.setPref('cursor', r.body.cursor), CM.setPref('updates', u), CM.edit(ids, y => {
            if (!y.reference) return false;
            y.status = u[y.client_id].status;
          })]).then(() => {
            if (r.body.more && n < 50) return page(r.body.cursor, n + 1);
            var count = Object.keys(seen).length;
            status.textContent = count ? t('field.pulled', {count: count}) : t('field.no_updates');
            return updates(u);
          });
        });
      }
      return page(v[1], 0);
    }).catch(() => { status.textContent = t(navigator.onLine ? 'error.server' : 'queue.offline'); })
      .then(() => { btn.disabled = false; });
  }

  /* --- start */

  var forResident = $('for-resident'), contact = $('contact-field');
  function contactShown() { contact.hidden = !forResident.checked; }
  forResident.addEventListener('change', contactShown);
  contactShown();
  $('device-signin-button').addEventListener('click', () => { signIn($('device-token').value); });
  $('device-token').addEventListener('keydown', e => {
    if (e.key === 'Enter') { e.preventDefault(); signIn(e.target.value); }
  });
  $('device-signout').addEventListener('click', signOut);
  $('sync-button').addEventListener('click', sync);
  $('pull-button').addEventListener('click', pull);

  var m = /(?:^#|&)device-token=([^&]+)/.exec(location.hash);
  if (m) {
    history.replaceState(null, '', location.pathname + location.search);  // the token leaves the address bar
    signIn(decodeURIComponent(m[1]));
  } else {
    Promise.all([CM.getPref('token'), CM.getPref('device'), CM.getPref('auth_failed')]).then(v => {
      show(v[0] && v[1]);
      if (!v[0] && v[2]) showError(t('field.sign_in_failed'));
    });
  }
})();
