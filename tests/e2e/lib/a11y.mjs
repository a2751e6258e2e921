// Accessibility and hygiene checks run inside a page, in whatever colour scheme it shows:
// labels, landmarks, names of controls, no inline scripts or styles, and WCAG 2 contrast of every
// piece of visible text against the background it is drawn on.

/** Problems found on the page as it is now (empty when all is well). */
export async function problems(page) {
  return page.evaluate(() => {
    const out = [];
    const describe = (el) => {
      const id = el.id ? `#${el.id}` : '';
      const text = (el.textContent || el.getAttribute('name') || '').trim().replace(/\s+/g, ' ').slice(0, 40);
      return `<${el.tagName.toLowerCase()}${id}> "${text}"`;
    };
    const visible = (el) => {
      const r = el.getBoundingClientRect();
      const s = getComputedStyle(el);
      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
    };

    // Landmarks and document basics.
    if (!document.documentElement.lang) out.push('<html> has no lang');
    if (!document.title.trim()) out.push('the page has no <title>');
    if (document.querySelectorAll('main').length !== 1) out.push('the page needs exactly one <main>');
    if (document.querySelectorAll('h1').length !== 1) out.push('the page needs exactly one <h1>');
    if (document.querySelector('header.top') && !document.querySelector('a.skip[href="#main"]')) {
      out.push('pages with a header need a skip link to #main');
    }

    // Every form control has a label; every button and link has a name.
    for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
      const named = el.labels?.length > 0 || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
      if (!named) out.push(`form control without a label: ${describe(el)}`);
    }
    for (const el of document.querySelectorAll('button, a[href]')) {
      const name = (el.textContent || el.getAttribute('aria-label') || el.getAttribute('title') || '').trim();
      if (!name) out.push(`control without a name: ${el.outerHTML.slice(0, 80)}`);
    }

    // No inline scripts (the CSP forbids them); inline styles are checked in the served HTML
    // (see harness.mjs), since the screenshot machinery injects a <style> of its own.
    if (document.querySelector('script:not([src])')) out.push('inline <script>');

    // Nothing wider than the viewport (responsive): the page never scrolls sideways; wide
    // tables scroll inside their own box. Name the widest element outside such a box.
    const root = document.documentElement;
    if (root.scrollWidth > root.clientWidth + 1) {
      let widest = null;
      for (const el of document.querySelectorAll('body *')) {
        if (visible(el) && (!widest || el.getBoundingClientRect().right > widest.getBoundingClientRect().right)) widest = el;
      }
      out.push(`the page scrolls sideways (${root.scrollWidth} > ${root.clientWidth}): widest ${widest && describe(widest)}`);
    }

    // Contrast of text: colours composited over the nearest backgrounds.
    const parse = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return null;
      const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [r, g, b, a];
    };
    const over = (top, bottom) => {
      const a = top[3];
      return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat(1);
    };
    const backgroundOf = (el) => {
      const layers = [];
      for (let p = el; p; p = p.parentElement) {
        const bg = parse(getComputedStyle(p).backgroundColor);
        if (bg && bg[3] > 0) {
          layers.push(bg);
          if (bg[3] >= 1) break;
        }
      }
      const dark = matchMedia('(prefers-color-scheme: dark)').matches;
      let colour = dark ? [0, 0, 0, 1] : [255, 255, 255, 1];
      for (const layer of layers.reverse()) colour = over(layer, colour);
      return colour;
    };
    const luminance = ([r, g, b]) => {
      const lin = (v) => {
        const s = v / 255;
        return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const ratio = (a, b) => {
      const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
      return (hi + 0.05) / (lo + 0.05);
    };
    const seen = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!node.textContent.trim() || !el || seen.has(el) || !visible(el)) continue;
      seen.add(el);
      if (el.closest('.sr-only, .skip')) continue;
      const style = getComputedStyle(el);
      const bg = backgroundOf(el);
      const fg = over(parse(style.color), bg);
      const size = parseFloat(style.fontSize);
      const bold = Number(style.fontWeight) >= 700;
      const large = size >= 24 || (bold && size >= 18.66);
      const need = large ? 3 : 4.5;
      const got = ratio(fg, bg);
      if (got < need) {
        out.push(`contrast ${got.toFixed(2)} < ${need} (${style.color} on rgb(${bg.slice(0, 3).map(Math.round)})): ${describe(el)}`);
      }
    }
    return out;
  });
}

/**
 * Presses Tab (from the top of the page, or from where the focus is) until `selector` has the
 * focus (at most `max` times);
 * returns the computed outline of the focused element, to check that focus is visible.
 */
export async function tabTo(page, selector, { fromTop = true, max = 60 } = {}) {
  if (fromTop) {
    await page.evaluate(() => {
      document.activeElement?.blur();
      window.getSelection()?.removeAllRanges();
    });
  }
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    const hit = await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, selector);
    if (hit) {
      return page.evaluate(() => {
        const s = getComputedStyle(document.activeElement);
        return { style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
      });
    }
  }
  throw new Error(`${selector} cannot be reached with the Tab key (${max} presses)`);
}
