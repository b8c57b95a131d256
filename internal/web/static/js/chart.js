// An inline SVG horizontal bar chart (no chart library).

import { s, fmtCount, compareVersions } from './dom.js';

/**
 * bars: [{label, value, muted?}]; opts: {total, sortByVersion, onClick(bar)}.
 * Returns an <svg> that scales to its container's width.
 */
export function barChart(bars, opts = {}) {
  const list = bars.slice();
  if (opts.sortByVersion) {
    list.sort((a, b) => (a.muted ? 1 : 0) - (b.muted ? 1 : 0) || compareVersions(b.label, a.label));
  }
  const W = Math.max(280, Math.round(opts.width || 400));
  const row = 30;
  const labelW = 112;
  const valueW = 78;
  const barW = W - labelW - valueW;
  const H = list.length * row + 6;
  const max = Math.max(1, ...list.map((b) => b.value));
  const total = opts.total || list.reduce((a, b) => a + b.value, 0) || 1;
  const svg = s('svg', {
    class: 'bar-chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': list.map((b) => `${b.label}: ${b.value}`).join(', '),
  });
  list.forEach((b, i) => {
    const y = i * row + 3;
    const w = Math.max(2, (b.value / max) * barW);
    const g = s('g', {
      class: ['bar', b.muted && 'muted', opts.onClick && 'clickable'],
      'data-label': b.label, 'data-value': b.value, tabindex: opts.onClick ? 0 : undefined,
    });
    if (opts.onClick) {
      g.addEventListener('click', () => opts.onClick(b));
      g.addEventListener('keydown', (e) => (e.key === 'Enter' || e.key === ' ') && opts.onClick(b));
    }
    const label = b.label.length > 15 ? b.label.slice(0, 14) + '…' : b.label;
    g.append(
      s('title', {}, `${b.label}: ${fmtCount(b.value)} (${pct(b.value, total)})`),
      s('rect', { class: 'bar-hit', x: 0, y, width: W, height: row - 6, rx: 3 }),
      s('text', { class: 'bar-label', x: labelW - 10, y: y + (row - 6) / 2, 'text-anchor': 'end', 'dominant-baseline': 'central' }, label),
      s('rect', { class: 'bar-track', x: labelW, y: y + 3, width: barW, height: row - 12, rx: 3 }),
      s('rect', { class: 'bar-fill', x: labelW, y: y + 3, width: w, height: row - 12, rx: 3 }),
      s('text', { class: 'bar-value', x: labelW + barW + 8, y: y + (row - 6) / 2, 'dominant-baseline': 'central' },
        fmtCount(b.value), s('tspan', { class: 'bar-pct' }, `  ${pct(b.value, total)}`)),
    );
    svg.append(g);
  });
  return svg;
}

function pct(v, total) {
  const p = (v / total) * 100;
  return p >= 10 || p === 0 ? `${Math.round(p)}%` : `${p.toFixed(1)}%`;
}
