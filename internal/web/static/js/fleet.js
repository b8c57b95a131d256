// The fleet view: the query box, summary counts, the things table with
// connectivity, firmware and tags, and firmware versions as a bar chart.
// It follows the fleet live through the event stream.

import { h, mount, debounce, fmtAgo, fmtTime, fmtCount, isEmpty, quoteValue } from './dom.js';
import { api, qs, enc } from './api.js';
import { EventStream } from './events.js';
import { barChart } from './chart.js';

const FW = 'shadow.reported.firmware_version';
const MAX_BARS = 6;

const EXAMPLES = [
  'connectivity.connected:false',
  'shadow.hasDelta:true',
  'shadow.reported.firmware_version<2.0.0',
  'attributes.deployment_ring:canary',
];

/** Join a filter to the operator's query (AND), keeping "*" neutral. */
function and(q, extra) {
  return !q || q === '*' ? extra : `(${q}) AND ${extra}`;
}

export function render(root, params, { go, setParams }) {
  const state = {
    query: params.q || '',
    pageSize: Number(params.size) || 25,
    tokens: [''], // tokens[i] is the nextToken that loads page i
    page: 0,
    rows: new Map(), // thing -> {thing, shadow, tr}
    stream: null,
    seq: 0,
  };

  // --- query bar ---------------------------------------------------------
  const input = h('input', {
    id: 'query-input', class: 'query-input', type: 'search', spellcheck: 'false', autocomplete: 'off',
    placeholder: 'Fleet query, e.g. attributes.location:factory-A AND shadow.reported.firmware_version<2.0.0',
    value: state.query, 'aria-label': 'Fleet query',
  });
  const queryError = h('div', { class: 'query-error', 'data-testid': 'query-error', role: 'alert', hidden: true });
  const form = h('form', {
    class: 'query-bar',
    onsubmit: (e) => {
      e.preventDefault();
      run(input.value.trim());
    },
  },
  h('span', { class: 'query-label' }, 'Query'),
  input,
  h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'query-run' }, 'Run'),
  h('button', { class: 'btn', type: 'button', onclick: () => run('') }, 'Clear'));
  const examples = h('div', { class: 'query-examples' }, h('span', { class: 'muted' }, 'Try:'),
    EXAMPLES.map((q) => h('button', { class: 'chip-button', type: 'button', onclick: () => run(q) }, q)));

  // --- stats, chart, table ---------------------------------------------
  const stat = (label, id) => {
    const value = h('div', { class: 'stat-value', 'data-testid': `stat-${id}` }, '—');
    const sub = h('div', { class: 'stat-sub' }, '');
    return { el: h('div', { class: 'card stat' }, h('div', { class: 'stat-label' }, label), value, sub), value, sub };
  };
  const stats = {
    total: stat('Matching things', 'total'),
    connected: stat('Connected', 'connected'),
    delta: stat('Pending delta', 'delta'),
    versions: stat('Firmware versions', 'versions'),
  };
  const chartBody = h('div', { class: 'chart-body', 'data-testid': 'firmware-chart' });
  const chartCard = h('section', { class: 'card chart-card' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Firmware versions'), h('span', { class: 'muted small' }, 'click a bar to filter')),
    chartBody);
  const tbody = h('tbody', {});
  const tableInfo = h('span', { class: 'muted small', 'data-testid': 'table-info' }, '');
  const prev = h('button', { class: 'btn small', type: 'button', onclick: () => page(-1), disabled: true }, '‹ Prev');
  const next = h('button', { class: 'btn small', type: 'button', onclick: () => page(1), disabled: true }, 'Next ›');
  const sizeSel = h('select', {
    class: 'select small', 'aria-label': 'Page size',
    onchange: () => {
      state.pageSize = Number(sizeSel.value);
      run(state.query, true);
    },
  }, [25, 50, 100].map((n) => h('option', { value: n, selected: n === state.pageSize }, `${n} / page`)));
  const table = h('table', { class: 'table things-table', 'data-testid': 'things-table' },
    h('thead', {}, h('tr', {},
      h('th', {}, 'Thing'), h('th', {}, 'Connectivity'), h('th', {}, 'Firmware'),
      h('th', {}, 'Shadow'), h('th', {}, 'Tags'), h('th', {}, 'Groups'))),
    tbody);
  const tableCard = h('section', { class: 'card table-card' },
    h('div', { class: 'card-head' }, h('h2', {}, 'Things'), tableInfo,
      h('div', { class: 'spacer' }), sizeSel, prev, next),
    h('div', { class: 'table-wrap' }, table));

  mount(root,
    h('header', { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Fleet'), h('p', { class: 'muted' }, 'Things, connectivity and firmware across the fleet. Updates live.'))),
    h('section', { class: 'card query-card' }, form, queryError, examples),
    h('div', { class: 'fleet-top' }, h('div', { class: 'stats' }, Object.values(stats).map((s) => s.el)), chartCard),
    tableCard);

  // --- loading -----------------------------------------------------------
  function showQueryError(err) {
    if (!err) {
      queryError.hidden = true;
      input.classList.remove('invalid');
      return;
    }
    queryError.hidden = false;
    input.classList.add('invalid');
    const m = /position (\d+)/.exec(err.message);
    const parts = [h('strong', {}, err.field === 'query' ? 'Query error: ' : 'Error: '), err.message];
    if (m && state.query) {
      const pos = Math.min(Number(m[1]), state.query.length);
      parts.push(h('pre', { class: 'caret' }, state.query + '\n' + ' '.repeat(pos) + '^'));
    }
    mount(queryError, parts);
  }

  function run(q, keepPage) {
    state.query = q;
    input.value = q;
    if (!keepPage) {
      state.tokens = [''];
      state.page = 0;
    }
    setParams({ q, size: state.pageSize !== 25 ? state.pageSize : '' });
    load();
  }

  function page(d) {
    state.page += d;
    load();
  }

  async function load() {
    const seq = ++state.seq;
    const q = state.query || '*';
    let res;
    try {
      res = await api('/api/search' + qs({ query: q, pageSize: state.pageSize, nextToken: state.tokens[state.page], expand: 'thing,shadow' }));
    } catch (e) {
      if (seq !== state.seq) return;
      showQueryError(e);
      mount(tbody, h('tr', {}, h('td', { colspan: 6, class: 'empty' }, e.status === 400 ? 'Fix the query to see results.' : `Could not load things: ${e.message}`)));
      tableInfo.textContent = '';
      prev.disabled = next.disabled = true;
      for (const s of Object.values(stats)) {
        s.value.textContent = '—';
        s.sub.textContent = '';
      }
      mount(chartBody);
      stopStream();
      return;
    }
    if (seq !== state.seq) return;
    showQueryError(null);
    state.tokens[state.page + 1] = res.nextToken || undefined;
    prev.disabled = state.page === 0;
    next.disabled = !res.nextToken;
    const from = state.page * state.pageSize;
    tableInfo.textContent = res.total ? `${fmtCount(from + 1)}–${fmtCount(from + res.things.length)} of ${fmtCount(res.total)}` : '';
    renderRows(res.expanded || []);
    refreshSummary();
    startStream();
  }

  // renderRows shows one page of an expanded search: each thing's record and
  // classic shadow came with the page (null: none; shadowError: unreadable).
  function renderRows(things) {
    if (!things.length) {
      state.rows.clear();
      mount(tbody, h('tr', {}, h('td', { colspan: 6, class: 'empty', 'data-testid': 'no-things' }, state.query ? 'No thing matches this query.' : 'No things yet. Devices appear here when they connect or are registered (POST /api/things).')));
      return;
    }
    state.rows.clear();
    mount(tbody, things.map((d) => {
      const shadow = d.shadowError ? undefined : d.shadow;
      const row = { name: d.thingName, thing: d.thing, shadow, tr: h('tr', { 'data-testid': 'thing-row', 'data-thing': d.thingName }) };
      state.rows.set(row.name, row);
      fillRow(row);
      return row.tr;
    }));
  }

  function fillRow(row) {
    const t = row.thing || {};
    const c = t.connectivity;
    const st = row.shadow && row.shadow.state ? row.shadow.state : null;
    const fw = st && st.reported ? st.reported.firmware_version : undefined;
    const hasDelta = st && !isEmpty(st.delta);
    const attrs = Object.entries(t.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
    const groups = t.thingGroupNames || [];
    const href = `#/things/${enc(row.name)}`;
    mount(row.tr,
      h('td', {}, h('a', { class: 'thing-link mono', href }, row.name), t.thingTypeName ? h('div', { class: 'muted small' }, t.thingTypeName) : null),
      h('td', { 'data-testid': 'connectivity' }, connectivityCell(c)),
      h('td', { 'data-testid': 'firmware' }, fw !== undefined ? h('span', { class: 'badge mono' }, String(fw)) : h('span', { class: 'muted' }, '—')),
      h('td', {}, row.shadow === undefined ? h('span', { class: 'muted' }, 'error')
        : row.shadow === null ? h('span', { class: 'muted' }, 'no shadow')
          : h('span', { class: 'shadow-cell' }, h('span', { class: 'mono muted' }, `v${row.shadow.version}`),
            hasDelta ? h('span', { class: 'badge warn', title: 'desired differs from reported' }, 'delta') : h('span', { class: 'badge ok-soft' }, 'in sync'))),
      h('td', {}, tagList(attrs)),
      h('td', {}, groups.length ? groups.map((g) => h('span', { class: 'chip group' }, g)) : h('span', { class: 'muted' }, '—')));
    row.tr.onclick = (e) => {
      if (e.target.closest('a,button')) return;
      location.hash = href;
    };
  }

  function tagList(attrs) {
    if (!attrs.length) return h('span', { class: 'muted' }, '—');
    const shown = attrs.slice(0, 4).map(([k, v]) => h('button', {
      class: 'chip tag', type: 'button', title: `filter on attributes.${k}:${v}`,
      onclick: () => run(and(state.query, `attributes.${k}:${quoteValue(v)}`)),
    }, h('span', { class: 'chip-k' }, k), h('span', { class: 'chip-v' }, v)));
    if (attrs.length > 4) shown.push(h('span', { class: 'muted small', title: attrs.slice(4).map(([k, v]) => `${k}=${v}`).join('\n') }, `+${attrs.length - 4}`));
    return h('div', { class: 'chips' }, shown);
  }

  // --- summary -----------------------------------------------------------
  async function refreshSummary() {
    const q = state.query || '*';
    try {
      const [total, conn, delta, buckets] = await Promise.all([
        api('/api/aggregations/count' + qs({ query: q })),
        api('/api/aggregations/count' + qs({ query: and(state.query, 'connectivity.connected:true') })),
        api('/api/aggregations/count' + qs({ query: and(state.query, 'shadow.hasDelta:true') })),
        api('/api/aggregations/buckets' + qs({ field: FW, query: q, maxBuckets: 50 })),
      ]);
      const n = total.count;
      stats.total.value.textContent = fmtCount(n);
      stats.total.sub.textContent = state.query ? 'match the query' : 'registered';
      stats.connected.value.textContent = fmtCount(conn.count);
      stats.connected.sub.textContent = n ? `${Math.round((conn.count / n) * 100)}% online` : '';
      stats.delta.value.textContent = fmtCount(delta.count);
      stats.delta.sub.textContent = 'desired ≠ reported';
      stats.versions.value.textContent = fmtCount(buckets.buckets.length);
      const top = buckets.buckets[0];
      stats.versions.sub.textContent = top ? `most common ${top.keyValue}` : 'none reported';
      renderChart(buckets);
    } catch (e) {
      // The table already shows the error that matters.
    }
  }

  function renderChart(res) {
    const all = res.buckets.map((b) => ({ label: b.keyValue, value: b.count, query: `${FW}:${quoteValue(b.keyValue)}` }));
    const sum = all.reduce((a, b) => a + b.value, 0);
    // The largest versions, and the rest as one bar.
    const bars = all.slice(0, MAX_BARS);
    if (all.length > MAX_BARS) {
      const rest = all.slice(MAX_BARS);
      bars.push({ label: `${rest.length} others`, value: rest.reduce((a, b) => a + b.value, 0), muted: true, query: rest.map((b) => b.query).join(' OR ') });
    }
    if (res.totalCount > sum && res.buckets.length < 50) {
      bars.push({ label: 'not reported', value: res.totalCount - sum, muted: true, query: `NOT ${FW}:*` });
    }
    if (!bars.length) {
      mount(chartBody, h('div', { class: 'empty' }, 'No thing matches.'));
      return;
    }
    state.chart = res;
    mount(chartBody, barChart(bars, {
      width: chartBody.clientWidth,
      total: res.totalCount,
      sortByVersion: true,
      onClick: (b) => run(and(state.query, b.query)),
    }));
  }

  // --- live --------------------------------------------------------------
  const summarySoon = debounce(refreshSummary, 800);

  function stopStream() {
    if (state.stream) state.stream.close();
    state.stream = null;
  }

  function startStream() {
    const key = state.query || '';
    if (state.stream && state.streamKey === key) return;
    stopStream();
    state.streamKey = key;
    state.stream = new EventStream(
      { query: state.query || undefined, types: 'shadow,connectivity' },
      {
        onEvent: (ev) => {
          const row = state.rows.get(ev.thing);
          if (row) {
            if (ev.type === 'connectivity') {
              row.thing = { ...(row.thing || {}), connectivity: ev.data };
            } else if (ev.type === 'shadow' && !ev.data.shadow) {
              if (ev.data.op === 'delete') row.shadow = null;
              else row.shadow = { ...(row.shadow || {}), version: ev.data.version, state: ev.data.state || {} };
            } else return;
            fillRow(row);
            flash(row.tr);
          }
          summarySoon();
        },
        onResync: () => load(),
      },
    );
  }

  // Relative times ("3m ago") age on screen.
  const ticker = setInterval(() => {
    for (const row of state.rows.values()) {
      const cell = row.tr.querySelector('[data-testid=connectivity]');
      if (cell && row.thing) mount(cell, connectivityCell(row.thing.connectivity));
    }
  }, 15000);

  const resized = debounce(() => state.chart && renderChart(state.chart), 100);
  const ro = new ResizeObserver(resized);
  ro.observe(chartBody);

  load();
  input.focus();
  return () => {
    stopStream();
    summarySoon.cancel();
    clearInterval(ticker);
    ro.disconnect();
    resized.cancel();
    state.seq++;
  };
}

export function connectivityCell(c) {
  if (!c) return h('span', { class: 'conn' }, h('span', { class: 'dot unknown' }), h('span', { class: 'muted' }, 'never connected'));
  if (c.connected) {
    const since = fmtAgo(c.lastConnectedAt || c.timestamp);
    return h('span', { class: 'conn', title: `connected since ${fmtTime(c.lastConnectedAt || c.timestamp)}${c.clientAddress ? ` from ${c.clientAddress}` : ''}` },
      h('span', { class: 'dot on' }), h('span', {}, 'Connected'),
      h('span', { class: 'muted small' }, since === 'just now' ? ' · just now' : ` · for ${since.replace(' ago', '')}`));
  }
  return h('span', { class: 'conn', title: c.disconnectReason || '' }, h('span', { class: 'dot off' }), h('span', {}, 'Offline'),
    h('span', { class: 'muted small' }, ` · seen ${fmtAgo(c.lastDisconnectedAt || c.timestamp)}`));
}

function flash(el) {
  el.classList.remove('flash');
  void el.offsetWidth;
  el.classList.add('flash');
}
