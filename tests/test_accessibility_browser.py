"""The phone pages in real Chromium at 320 px: no sideways scrolling, 44 px touch targets, AA contrast."""

from __future__ import annotations


import pytest


pytestmark = pytest.mark.browser

# Every control a thumb presses; inline links inside sentences are exempt (WCAG 2.5.8).
TARGETS = "button:not([hidden]), select, input:not([type=hidden]):not([type=radio]):not([type=checkbox]), " \
          "textarea, summary, label.choice, a.lang-switch, a.button"

AUDIT = """(targets) => {
  const parse = c => { const m = c.match(/[\\d.]+/g).map(Number); return m.length === 4 ? m : [...m, 1]; };
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                              return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = el => { for (; el; el = el.parentElement) { const c = parse(getComputedStyle(el).backgroundColor);
                                                               if (c[3] > 0.5) return c; } return [255, 255, 255, 1]; };
  const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
                          return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const small = [], low = [];
  for (const el of document.querySelectorAll(targets)) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.height < 44 || r.width < 44) small.push(`${el.tagName}#${el.id || el.className}: ${r.width.toFixed(0)}×${r.height.toFixed(0)}`);
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !visible(el)) continue;
    const s = getComputedStyle(el);
    const [l1, l2] = [lum(parse(s.color)), lum(background(el))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && Number(s.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) low.push(`${node.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return {small, low, overflow: document.scrollingElement.scrollWidth - window.innerWidth};
}"""


@pytest.mark.parametrize("path", ["/report?lang=km", "/report?lang=en", "/r", "/field?lang=km"])
@pytest.mark.parametrize("javascript", [True, False])
def test_usable_at_320_px(browser, live_server, path, javascript):
    context = browser.new_context(viewport={"width": 320, "height": 640}, java_script_enabled=javascript)
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(live_server)
               else route.abort())
    page.goto(f"{live_server}{path}")
    page.wait_for_load_state("load")
    for summary in page.locator("details.group:not([open]) > summary").all():
        if summary.is_visible():
            summary.click()  # open every category group, so every choice is measured
    result = page.evaluate(AUDIT, TARGETS)
    context.close()
    assert result["overflow"] <= 0, f"{path} scrolls sideways by {result['overflow']} px at 320 px"
    assert not result["small"], f"{path}: touch targets under 44 px: {result['small']}"
    assert not result["low"], f"{path}: text below WCAG AA contrast: {result['low']}"
