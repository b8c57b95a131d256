// The thing view: desired, reported and delta side by side, editing
// desired, history with diffs between versions, and the connectivity
// timeline. Follows the thing live through the event stream.

import { h, s, mount, debounce, fmtAgo, fmtTime, fmtClock, toMs, jsonView, brief, isEmpty } from './dom.js';
import { api, qs, enc, ApiError, readOnlyReason } from './api.js';
import { EventStream } from './events.js';
import { diff, mergePatch } from './diff.js';
import { connectivityCell } from './fleet.js';

const HISTORY_PAGE = 20;

export function render(root, params, { setParams }) {
  const name = params.thing;
  const state = {
    shadowName: params.shadow || '', // '' is the classic shadow
    thing: null,
    shadow: null, // null: no shadow yet
    history: [],
    historyMore: false,
    editing: false,
    conn: [], // connectivity transitions [{t, connected, reason, address}]
    stream: null,
    alive: true,
  };
  document.title = `${name} · Umbra`;

  const headBox = h('div', { class: 'thing-head' });
  const tabs = h('div', { class: 'tabs', role: 'tablist' });
  const panels = h('div', { class: 'shadow-grid' });
  const banner = h('div', { class: 'banner', hidden: true, role: 'status' });
  const historyList = h('div', { class: 'history', 'data-testid': 'history' });
  const historyMore = h('button', { class: 'btn small', type: 'button', hidden: true, onclick: () => loadHistory(true) }, 'Load older');
  const connBox = h('div', { class: 'conn-box', 'data-testid': 'conn-timeline' });

  mount(root,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/fleet' }, 'Fleet'), h('span', { class: 'sep' }, '/'), h('span', { class: 'mono' }, name)),
    headBox,
    banner,
    tabs,
    panels,
    h('div', { class: 'thing-grid' },
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'History'), h('span', { class: 'muted small' }, 'every accepted change, newest first')), historyList, h('div', { class: 'card-foot' }, historyMore)),
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Connectivity')), connBox)));

  // --- header ------------------------------------------------------------
  function renderHead() {
    const t = state.thing;
    const attrs = t ? Object.entries(t.attributes || {}).sort(([a], [b]) => a.localeCompare(b)) : [];
    mount(headBox,
      h('div', { class: 'thing-title' },
        h('h1', { class: 'mono', 'data-testid': 'thing-name' }, name),
        h('span', { 'data-testid': 'thing-connectivity' }, connectivityCell(t && t.connectivity)),
        state.shadow ? h('span', { class: 'badge mono', 'data-testid': 'shadow-version' }, `shadow v${state.shadow.version}`) : null),
      h('div', { class: 'thing-meta' },
        t && t.thingTypeName ? meta('Type', t.thingTypeName) : null,
        t ? meta('Registered', fmtTime(t.createdAt)) : meta('Registry', 'not registered'),
        t && t.thingGroupNames && t.thingGroupNames.length ? meta('Groups', t.thingGroupNames.join(', ')) : null,
        state.shadow ? meta('Last change', fmtAgo(state.shadow.timestamp)) : null),
      attrs.length ? h('div', { class: 'chips' }, attrs.map(([k, v]) => h('span', { class: 'chip tag' }, h('span', { class: 'chip-k' }, k), h('span', { class: 'chip-v' }, v)))) : null);
  }

  function meta(k, v) {
    return h('span', { class: 'meta' }, h('span', { class: 'muted' }, k), ' ', v);
  }

  // --- shadow panels -----------------------------------------------------
  const desiredBody = h('div', { class: 'panel-body' });
  const reportedBody = h('div', { class: 'panel-body', 'data-testid': 'reported' });
  const deltaBody = h('div', { class: 'panel-body', 'data-testid': 'delta' });
  const readOnly = readOnlyReason();
  const editBtn = h('button', { class: 'btn small', type: 'button', 'data-testid': 'edit-desired', disabled: !!readOnly, title: readOnly || 'change desired state', onclick: () => startEdit() }, 'Edit');
  const deltaCount = h('span', { class: 'muted small' });
  mount(panels,
    h('section', { class: 'card panel', 'data-testid': 'desired-panel' }, h('div', { class: 'card-head' }, h('h2', {}, 'Desired'), h('span', { class: 'spacer' }), editBtn), desiredBody),
    h('section', { class: 'card panel' }, h('div', { class: 'card-head' }, h('h2', {}, 'Reported')), reportedBody),
    h('section', { class: 'card panel delta-panel' }, h('div', { class: 'card-head' }, h('h2', {}, 'Delta'), deltaCount), deltaBody));

  function stateOf() {
    return (state.shadow && state.shadow.state) || {};
  }

  function renderPanels() {
    const st = stateOf();
    if (!state.editing) mount(desiredBody, jsonView(st.desired, { empty: 'nothing desired', class: 'desired' }));
    mount(reportedBody, jsonView(st.reported, { empty: 'nothing reported', highlight: st.delta }));
    const n = st.delta ? Object.keys(st.delta).length : 0;
    deltaCount.textContent = n ? `${n} key${n > 1 ? 's' : ''} pending` : '';
    mount(deltaBody, isEmpty(st.delta)
      ? h('div', { class: 'in-sync' }, h('span', { class: 'dot on' }), state.shadow ? 'In sync: the device reports what is desired.' : 'No shadow yet.')
      : jsonView(st.delta, { class: 'delta' }));
  }

  function startEdit() {
    if (state.editing) return;
    state.editing = true;
    const base = stateOf().desired || {};
    const area = h('textarea', { class: 'editor mono', spellcheck: 'false', 'data-testid': 'desired-editor', rows: 12 });
    area.value = JSON.stringify(base, null, 2);
    const err = h('div', { class: 'form-error', role: 'alert', 'data-testid': 'edit-error' });
    const save = h('button', { class: 'btn primary small', type: 'submit', 'data-testid': 'save-desired' }, 'Save');
    const validate = () => {
      try {
        const v = JSON.parse(area.value || '{}');
        if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('desired must be a JSON object');
        err.textContent = '';
        save.disabled = false;
        return v;
      } catch (e) {
        err.textContent = e.message;
        save.disabled = true;
        return undefined;
      }
    };
    area.addEventListener('input', validate);
    const form = h('form', {
      class: 'edit-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const v = validate();
        if (v === undefined) return;
        const patch = mergePatch(base, v);
        if (!patch) return stopEdit();
        save.disabled = true;
        try {
          await api(`/things/${enc(name)}/shadow` + qs({ name: state.shadowName }), { method: 'POST', body: { state: { desired: patch } } });
          stopEdit();
          refresh();
        } catch (e2) {
          err.textContent = e2.status === 403 ? `Not allowed: ${e2.message}` : `${e2.status || ''} ${e2.message}`;
          save.disabled = false;
        }
      },
    },
    area,
    h('div', { class: 'muted small' }, 'Saved as a merge: changed keys are sent, removed keys are sent as null.'),
    err,
    h('div', { class: 'form-actions' }, h('button', { class: 'btn small', type: 'button', onclick: () => stopEdit() }, 'Cancel'), save));
    editBtn.hidden = true;
    mount(desiredBody, form);
    area.focus();
  }

  function stopEdit() {
    state.editing = false;
    editBtn.hidden = false;
    renderPanels();
  }

  // --- named shadows -----------------------------------------------------
  async function loadTabs() {
    let names = [];
    try {
      const res = await api(`/api/things/shadow/ListNamedShadowsForThing/${enc(name)}` + qs({ pageSize: 100 }));
      names = res.results || [];
    } catch {}
    if (!names.length && !state.shadowName) {
      mount(tabs);
      return;
    }
    const all = ['', ...names];
    if (state.shadowName && !names.includes(state.shadowName)) all.push(state.shadowName);
    mount(tabs, all.map((n) => h('button', {
      class: ['tab', n === state.shadowName && 'active'], type: 'button', role: 'tab',
      onclick: () => {
        state.shadowName = n;
        setParams({ shadow: n });
        state.history = [];
        stopEditQuiet();
        loadTabs();
        refresh();
      },
    }, n || 'Classic shadow')));
  }

  function stopEditQuiet() {
    state.editing = false;
    editBtn.hidden = false;
  }

  // --- data --------------------------------------------------------------
  async function loadThing() {
    const [thing, conn] = await Promise.all([
      api(`/api/things/${enc(name)}`).catch(() => null),
      api(`/api/things/${enc(name)}/connectivity`).catch(() => null),
    ]);
    state.thing = thing;
    seedConnectivity(conn ? conn.history : []);
    renderHead();
    renderConn();
  }

  async function loadShadow() {
    try {
      state.shadow = await api(`/things/${enc(name)}/shadow` + qs({ name: state.shadowName }));
      banner.hidden = true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        state.shadow = null;
        if (!state.thing) {
          banner.hidden = false;
          mount(banner, `No thing or shadow named “${name}”.`);
        }
      } else {
        banner.hidden = false;
        mount(banner, `Could not load the shadow: ${e.message}`);
      }
    }
    renderHead();
    renderPanels();
  }

  async function loadHistory(older) {
    const before = older && state.history.length ? state.history[state.history.length - 1].version : undefined;
    let res;
    try {
      // One extra entry so the oldest shown can be diffed against its predecessor.
      res = await api(`/things/${enc(name)}/shadow/history` + qs({ name: state.shadowName, limit: HISTORY_PAGE + 1, before }));
    } catch (e) {
      mount(historyList, h('div', { class: 'empty' }, `Could not load history: ${e.message}`));
      return;
    }
    const entries = res.entries || [];
    state.historyMore = entries.length > HISTORY_PAGE;
    const page = entries.slice(0, HISTORY_PAGE);
    state.historyNext = entries[HISTORY_PAGE] || null;
    state.history = older ? state.history.concat(page) : page;
    historyMore.hidden = !state.historyMore;
    renderHistory();
  }

  function renderHistory() {
    const list = state.history;
    if (!list.length) {
      mount(historyList, h('div', { class: 'empty' }, 'No history yet.'));
      return;
    }
    mount(historyList, list.map((e, i) => {
      const prevEntry = i + 1 < list.length ? list[i + 1] : state.historyNext;
      const prevState = prevEntry ? prevEntry.state : null;
      const isFirst = !prevEntry;
      const changes = e.op === 'delete' ? null : diff(prevState, e.state);
      const req = h('details', { class: 'history-req' }, h('summary', {}, 'request'), jsonView(e.request));
      return h('div', { class: 'history-entry', 'data-testid': 'history-entry', 'data-version': e.version },
        h('div', { class: 'history-head' },
          h('span', { class: 'badge mono' }, `v${e.version}`),
          h('span', { class: ['op', `op-${e.op}`] }, e.op),
          h('span', { class: 'muted small', title: fmtTime(e.timestamp) }, fmtAgo(e.timestamp)),
          h('span', { class: 'spacer' }),
          h('span', { class: 'principal mono small', title: e.origin ? `via ${e.origin}` : '' }, e.principal || '')),
        changes === null ? h('div', { class: 'diff-line removed' }, 'shadow deleted')
          : !changes.length ? h('div', { class: 'muted small diff-none' }, isFirst && !state.historyMore ? 'created, empty' : 'no change to the state (metadata or version only)')
            : h('div', { class: 'diff' }, changes.map(diffLine)),
        req);
    }));
  }

  function diffLine(c) {
    const sign = { added: '+', removed: '−', changed: '~' }[c.kind];
    return h('div', { class: ['diff-line', c.kind] },
      h('span', { class: 'diff-sign' }, sign),
      h('span', { class: 'diff-path mono' }, c.path),
      c.kind === 'changed' ? [h('span', { class: 'diff-from mono' }, brief(c.from)), h('span', { class: 'diff-arrow' }, '→'), h('span', { class: 'diff-to mono' }, brief(c.to))]
        : h('span', { class: 'mono' }, brief(c.kind === 'added' ? c.to : c.from)));
  }

  // --- connectivity timeline ----------------------------------------------
  // Transitions are keyed by session (connect count) and kind: the stored
  // history (GET /api/things/{thing}/connectivity), the current record and
  // live events describe the same ones.
  const connKey = (x) => `${x.v}/${x.connected}`;
  const byTime = (a, b) => a.t - b.t || a.v - b.v || (a.connected === b.connected ? 0 : a.connected ? -1 : 1);

  function seedConnectivity(history) {
    const c = state.thing && state.thing.connectivity;
    const known = new Map(state.conn.map((x) => [connKey(x), x]));
    for (const tr of history) {
      const x = { t: tr.timestamp, v: tr.versionNumber, connected: tr.connected, reason: tr.disconnectReason, address: tr.clientAddress, proto: tr.protocolVersion };
      known.set(connKey(x), x);
    }
    if (c && c.lastConnectedAt) {
      const x = { t: c.lastConnectedAt, v: c.versionNumber, connected: true, address: c.clientAddress, proto: c.protocolVersion };
      if (!known.has(connKey(x))) known.set(connKey(x), x);
    }
    if (c && !c.connected && c.lastDisconnectedAt) {
      const x = { t: c.lastDisconnectedAt, v: c.versionNumber, connected: false, reason: c.disconnectReason };
      if (!known.has(connKey(x))) known.set(connKey(x), x);
    }
    state.conn = [...known.values()].sort(byTime);
  }

  function renderConn() {
    const items = state.conn;
    const c = state.thing && state.thing.connectivity;
    if (!items.length) {
      mount(connBox, h('div', { class: 'empty' }, c ? 'No connection recorded.' : 'This thing has never connected.'));
      return;
    }
    const now = Date.now();
    const first = items[0].t;
    const span = Math.min(Math.max((now - first) * 1.25, 15 * 60e3), 7 * 86400e3);
    const start = now - span;
    const W = 600;
    const H = 46;
    const x = (t) => ((Math.max(t, start) - start) / span) * W;
    const svg = s('svg', { class: 'timeline', viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', 'aria-label': 'connectivity timeline' });
    svg.append(s('rect', { class: 'tl-unknown', x: 0, y: 4, width: x(first), height: 18 }));
    items.forEach((it, i) => {
      const end = i + 1 < items.length ? items[i + 1].t : now;
      if (end < start) return;
      svg.append(s('rect', { class: it.connected ? 'tl-on' : 'tl-off', x: x(it.t), y: 4, width: Math.max(1, x(end) - x(it.t)), height: 18 },
        s('title', {}, `${it.connected ? 'connected' : 'offline'} from ${fmtTime(it.t)}`)));
    });
    for (let i = 0; i <= 4; i++) {
      const t = start + (span * i) / 4;
      svg.append(s('text', { class: 'tl-tick', x: (W * i) / 4, y: 38, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, i === 4 ? 'now' : span > 86400e3 ? fmtTime(t).slice(5, 16) : fmtClock(t)));
    }
    mount(connBox,
      svg,
      h('div', { class: 'legend small muted' }, h('span', { class: 'swatch on' }), 'connected', h('span', { class: 'swatch off' }), 'offline', h('span', { class: 'swatch unknown' }), 'unknown'),
      h('ul', { class: 'conn-list' }, items.slice().reverse().slice(0, 12).map((it) => h('li', { 'data-testid': 'conn-event' },
        h('span', { class: ['dot', it.connected ? 'on' : 'off'] }),
        h('span', {}, it.connected ? 'Connected' : 'Disconnected'),
        h('span', { class: 'muted small', title: fmtTime(it.t) }, fmtTime(it.t)),
        it.connected && it.address ? h('span', { class: 'muted small mono' }, `${it.address}${it.proto ? ` · MQTT ${it.proto === 5 ? '5' : '3.1.1'}` : ''}`) : null,
        !it.connected && it.reason ? h('span', { class: 'muted small' }, it.reason) : null))),
      h('div', { class: 'muted small' }, 'Recorded: the last connect and disconnect, plus changes seen live while this page is open.'));
  }

  // --- live --------------------------------------------------------------
  const refresh = debounce(() => {
    loadShadow();
    loadHistory(false);
  }, 150);

  state.stream = new EventStream({ thing: name }, {
    onEvent: (ev) => {
      if (ev.type === 'shadow') {
        if ((ev.data.shadow || '') !== state.shadowName) {
          if (ev.data.shadow) loadTabs();
          return;
        }
        // Show the new state at once from the event, then refetch for
        // metadata and history.
        if (ev.data.op === 'delete') state.shadow = null;
        else state.shadow = { ...(state.shadow || {}), version: ev.data.version, state: ev.data.state || {}, timestamp: Math.floor(ev.time / 1000) };
        renderHead();
        renderPanels();
        refresh();
      } else if (ev.type === 'connectivity') {
        const c = ev.data;
        state.thing = { ...(state.thing || { thingName: name }), connectivity: c };
        const t = c.connected ? c.lastConnectedAt || c.timestamp : c.lastDisconnectedAt || c.timestamp;
        const x = { t, v: c.versionNumber, connected: c.connected, reason: c.disconnectReason, address: c.clientAddress, proto: c.protocolVersion };
        if (!state.conn.some((y) => connKey(y) === connKey(x))) {
          state.conn.push(x);
          state.conn.sort(byTime);
        }
        renderHead();
        renderConn();
      }
    },
    onResync: () => {
      loadThing();
      refresh();
    },
  });

  const ticker = setInterval(() => {
    renderConn();
    if (!state.editing) renderHead();
  }, 30000);

  loadThing().then(loadShadow);
  loadHistory(false);
  loadTabs();
  return () => {
    state.alive = false;
    state.stream.close();
    refresh.cancel();
    clearInterval(ticker);
  };
}
