/* civicmap service worker. The server prepends SHELL_VERSION and SHELL_ASSETS (hashed static URLs).
   The form opens with no connection: /report and /field come from a per-language cache, static files
   cache-first, /r/<ref> network-first. The API is never touched here. Background Sync runs the same
   sender as the page (store.js). */
/* global SHELL_VERSION, SHELL_ASSETS, CM */
var CACHE = 'civicmap-' + SHELL_VERSION;
importScripts(SHELL_ASSETS.filter(u => u.indexOf('/js/store.js') >= 0)[0]);
var SHELLS = /^\/(report|field)$/;
var MATCH = {ignoreVary: true};

self.addEventListener('install', e => {
  // Default fetch cache mode: the hashed URLs are immutable, so the HTTP cache may answer.
  e.waitUntil(caches.open(CACHE).then(c => c.addAll(SHELL_ASSETS))
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', e => {
  e.waitUntil(caches.keys().then(keys => {
    return Promise.all(keys.filter(k => k.indexOf('civicmap-') === 0 && k !== CACHE)
      .map(k => caches.delete(k)));
  }).then(() => self.clients.claim()));
});

function lang(url) {
  var asked = url.searchParams.get('lang');
  if (asked === 'en' || asked === 'km') return Promise.resolve(asked);
  return CM.getPref('lang').catch(() => null).then(saved => saved || (/^km/i.test(navigator.language) ? 'km' : 'en'));
}

/* The form page: cache-first under "/report?lang=km" and the like; a miss goes to the network and is kept. */
function shell(e, req, url, path) {
  return Promise.all([caches.open(CACHE), lang(url)]).then(v => {
    var cache = v[0], key = path + '?lang=' + v[1];
    return cache.match(key, MATCH).then(hit => {
      // Categories, areas and words change without a new script: a shell older than a day is
      // refreshed in the background, after it has been shown.
      if (hit && navigator.onLine && Date.now() - Date.parse(hit.headers.get('Date') || 0) > 864e5) {
        e.waitUntil(fetch(key).then(res => { if (res.ok) return cache.put(key, res); }).catch(() => {}));
      }
      return hit || fetch(req).then(res => {
        var got = res.headers.get('Content-Language');
        if (res.ok && (got === 'en' || got === 'km')) cache.put(path + '?lang=' + got, res.clone());
        return res;
      }, err => {
        // Offline and never opened in this language: the other language beats nothing.
        return cache.match(path + '?lang=' + (v[1] === 'km' ? 'en' : 'km'), MATCH).then(other => {
          if (other) return other;
          throw err;
        });
      });
    });
  });
}

function cacheShell(path, lang) {
  if (!SHELLS.test(path) || (lang !== 'en' && lang !== 'km')) return Promise.resolve(false);
  var key = path + '?lang=' + lang;
  return caches.open(CACHE).then(cache => {
    return cache.match(key, MATCH).then(hit => hit ? true : cache.add(key).then(() => true));
  }).catch(() => false);
}

function cacheFirst(req, keep) {
  return caches.open(CACHE).then(cache => {
    return cache.match(req, MATCH).then(hit => {
      return hit || fetch(req).then(res => {
        if (res.ok && keep) cache.put(req, res.clone());
        return res;
      });
    });
  });
}

function networkFirst(req, key) {
  return caches.open(CACHE).then(cache => {
    return fetch(req).then(res => {
      if (res.ok) cache.put(key, res.clone());
      return res;
    }, err => {
      return cache.match(key, MATCH).then(hit => {
        if (hit) return hit;
        throw err;
      });
    });
  });
}

self.addEventListener('fetch', e => {
  var req = e.request, url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== location.origin || url.pathname.indexOf('/api/') === 0) return;
  var path = url.pathname.replace(/\/$/, '');
  if (req.mode === 'navigate' && (SHELLS.test(path) || path === '')) {
    e.respondWith(shell(e, req, url, path || '/report'));  // "/" only redirects to /report
  } else if (url.pathname.indexOf('/static/') === 0) {
    e.respondWith(cacheFirst(req, url.searchParams.has('v') || url.pathname.indexOf('/static/vendor/') === 0));
  } else if (req.mode === 'navigate' && url.pathname.indexOf('/r/') === 0) {
    e.respondWith(networkFirst(req, url.origin + url.pathname));
  }
});

self.addEventListener('message', e => {
  var d = e.data || {};
  if (d.type !== 'cache-shell') return;
  e.waitUntil(cacheShell(d.path, d.lang).then(ok => {
    if (e.source) e.source.postMessage({type: 'shell-cached', ok: ok});
  }));
});

self.addEventListener('sync', e => {
  if (e.tag !== 'civicmap-send') return;
  e.waitUntil(CM.flush({force: true}).then(r => {
    if (r.offline || r.retryAt) throw new Error('not sent yet: the browser will try again');
  }));
});
