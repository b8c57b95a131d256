// Small DOM helpers. Everything the dashboard shows is built with h(), which
// sets text with textContent, so names, tags and shadow values coming from
// devices can never inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'style') Object.assign(el.style, v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** h('div', {class: 'x', onclick: fn}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** s('rect', {...}) builds SVG elements. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace el's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

// --- formatting -------------------------------------------------------------

/** Times from the API are Unix seconds (shadows, registry) or milliseconds
 * (connectivity, events); toMs accepts either. */
export function toMs(t) {
  if (!t) return 0;
  return t < 1e11 ? t * 1000 : t;
}

export function fmtAgo(t, now = Date.now()) {
  const ms = toMs(t);
  if (!ms) return '—';
  let d = Math.round((now - ms) / 1000);
  const future = d < 0;
  d = Math.abs(d);
  let out;
  if (d < 5) return 'just now';
  if (d < 60) out = `${d}s`;
  else if (d < 3600) out = `${Math.floor(d / 60)}m`;
  else if (d < 86400) out = `${Math.floor(d / 3600)}h ${Math.floor((d % 3600) / 60)}m`;
  else out = `${Math.floor(d / 86400)}d ${Math.floor((d % 86400) / 3600)}h`;
  return future ? `in ${out}` : `${out} ago`;
}

const pad = (n) => String(n).padStart(2, '0');

export function fmtTime(t) {
  const ms = toMs(t);
  if (!ms) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClock(t) {
  const d = new Date(toMs(t));
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtCount(n) {
  return Number(n || 0).toLocaleString('en-US');
}

export function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function isEmpty(v) {
  return v === null || v === undefined || (isObject(v) && Object.keys(v).length === 0);
}

/** A JSON value rendered with syntax colouring, as a <pre>. */
export function jsonView(value, opts = {}) {
  const pre = h('pre', { class: ['json', opts.class] });
  if (value === undefined || value === null || (isObject(value) && !Object.keys(value).length)) {
    pre.append(h('span', { class: 'json-empty' }, opts.empty || '{}'));
    return pre;
  }
  render(pre, value, 0, opts.highlight || null);
  return pre;
}

function render(out, v, depth, hl) {
  const ind = '  '.repeat(depth);
  if (Array.isArray(v)) {
    if (!v.length) return out.append('[]');
    out.append('[\n');
    v.forEach((x, i) => {
      out.append(ind + '  ');
      render(out, x, depth + 1, null);
      out.append(i < v.length - 1 ? ',\n' : '\n');
    });
    out.append(ind + ']');
  } else if (isObject(v)) {
    const keys = Object.keys(v);
    if (!keys.length) return out.append('{}');
    out.append('{\n');
    keys.forEach((k, i) => {
      const mark = hl && k in hl;
      const line = h('span', { class: mark ? 'json-line json-hl' : 'json-line' });
      line.append(ind + '  ', h('span', { class: 'json-key' }, JSON.stringify(k)), ': ');
      render(line, v[k], depth + 1, mark && isObject(hl[k]) ? hl[k] : null);
      out.append(line, i < keys.length - 1 ? ',\n' : '\n');
    });
    out.append(ind + '}');
  } else {
    const cls = v === null ? 'json-null' : `json-${typeof v}`;
    out.append(h('span', { class: cls }, JSON.stringify(v)));
  }
}

/** A short one-line rendering of a JSON value for diffs and tables. */
export function brief(v, max = 60) {
  const t = JSON.stringify(v);
  if (t === undefined) return '—';
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

/** Compare dotted version strings numerically ("2.10.0" > "2.9.1"). */
export function compareVersions(a, b) {
  const pa = String(a).split(/[.\-+]/);
  const pb = String(b).split(/[.\-+]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/** Quote a value for the fleet query language where it needs it. */
export function quoteValue(v) {
  return /^[A-Za-z0-9_][A-Za-z0-9_.\-]*$/.test(v) && !/^(AND|OR|NOT|TO)$/.test(v) ? v : `"${String(v).replace(/["\\]/g, '\\$&')}"`;
}
