// The rollouts view: the list, a create form with a preview of each wave's
// devices, and one rollout's live per-wave progress, halt reason, event log
// and actions. The only module that knows the rollout API:
//
//   GET  /api/rollouts                     {rollouts: [View]}
//   POST /api/rollouts                     Spec + {start} -> View
//   POST /api/rollouts/preview             Spec -> {waves: [{name, count, things}], plan, empty}
//   GET  /api/rollouts/{id}                View
//   GET  /api/rollouts/{id}/devices        {devices: [{thing, wave, state, before, reason,
//                                           failure: {gate, value, time}, installed, ota: {status, progress, error}}]}
//   POST /api/rollouts/{id}/{start|pause|resume|cancel|rollback|approve[?wave=N]}
//   View: {id, spec: Spec, state, reason, currentWave, createdAt, updatedAt (ms),
//          waves: [{name, state, size, pending, inProgress, succeeded, failed, regressed,
//                   rolledBack, skipped, installed}], totals, notice,
//          events: [{time, type, wave, thing, message}]}
//   live: event "rollout", data {rollout: id, event: {...}}
//
// A server without rollouts answers 404 and the view says so.

import { h, mount, debounce, fmtAgo, fmtTime, fmtCount, jsonView } from './dom.js';
import { api, enc, qs, ApiError, readOnlyReason } from './api.js';
import { EventStream } from './events.js';

const KINDS = ['succeeded', 'failed', 'inProgress', 'pending'];
const KIND_LABEL = { succeeded: 'succeeded', failed: 'failed', inProgress: 'in progress', pending: 'pending' };

export function render(root, params, { go }) {
  if (params.id === 'new') return renderNew(root, go);
  if (params.id) return renderOne(root, params.id);
  return renderList(root, go);
}

function notAvailable(root) {
  mount(root, pageHead('Rollouts', 'Phased firmware rollouts with health-gated waves.'),
    h('section', { class: 'card empty-state', 'data-testid': 'rollouts-unavailable' },
      h('h2', {}, 'Rollouts not available'),
      h('p', { class: 'muted' }, 'This Umbra server has no rollout API (', h('code', {}, 'GET /api/rollouts'), ' answered 404).'),
      h('p', { class: 'muted' }, 'Upgrade the server to a version with phased rollouts to plan, watch and roll back OTA updates here.')));
}

function pageHead(title, sub, ...actions) {
  return h('header', { class: 'page-head' }, h('div', {}, h('h1', {}, title), sub ? h('p', { class: 'muted' }, sub) : null), h('div', { class: 'actions' }, actions));
}

// --- the API's shapes ---------------------------------------------------

const num = (v) => Number(v) || 0;

/** A rollout View as the page uses it. */
export function normalize(v) {
  const spec = v.spec || {};
  const specWaves = spec.waves || [];
  const state = String(v.state || 'unknown');
  const current = num(v.currentWave);
  const waves = (v.waves || []).map((w, i) => {
    const ws = specWaves[i] || {};
    const progress = {
      succeeded: num(w.succeeded),
      failed: num(w.failed),
      inProgress: num(w.inProgress),
      pending: num(w.pending),
    };
    // The server's badge (what the wave's devices really did); older
    // servers send none.
    let wstate = w.state || 'pending';
    if (!w.state) {
      if (['completed'].includes(state) || i < current) wstate = 'passed';
      else if (i === current && state !== 'created') wstate = state;
    }
    return {
      name: w.name || ws.name || `Wave ${i + 1}`,
      state: wstate,
      selector: ws.query ? ws.query : ws.percent ? `${ws.percent}% of remaining` : '',
      size: num(w.size),
      skipped: num(w.skipped),
      regressed: num(w.regressed),
      rolledBack: num(w.rolledBack),
      installed: num(w.installed),
      progress,
      rules: [
        `success ≥ ${ws.successThreshold ?? 100}%`,
        `halt > ${ws.failureThreshold ?? 0}% failed`,
        ws.minFinished ? `judge after ${ws.minFinished}` : null,
        ws.bakeTime && ws.bakeTime !== '0s' ? `bake ${ws.bakeTime}` : null,
        ws.deviceTimeout && ws.deviceTimeout !== '0s' ? `timeout ${ws.deviceTimeout}` : null,
        ws.requireApproval ? 'needs approval' : null,
      ].filter(Boolean),
    };
  });
  const total = { succeeded: 0, failed: 0, inProgress: 0, pending: 0 };
  let size = 0;
  for (const w of waves) {
    for (const k of KINDS) total[k] += w.progress[k];
    size += w.size;
  }
  return {
    id: v.id,
    name: spec.name || v.id,
    state,
    target: spec.target || '',
    patch: spec.patch,
    spec,
    reason: v.reason || '',
    notice: v.notice || '',
    installed: num((v.totals || {}).installed),
    rolledBack: num((v.totals || {}).rolledBack),
    current,
    createdAt: v.createdAt,
    updatedAt: v.updatedAt,
    waves,
    total,
    size,
    events: v.events || [],
  };
}

function statePill(st, testid = 'rollout-state') {
  const cls = {
    running: 'info', baking: 'info', waiting_approval: 'warn', paused: 'warn', halted: 'bad',
    completed: 'ok', passed: 'ok', cancelled: '', rolled_back: 'warn', created: '', pending: '',
    failed: 'bad', not_reached: '', succeeded: 'ok', regressed: 'bad', timed_out: 'bad', in_progress: 'info', notified: 'info', skipped: '',
  }[st] ?? '';
  return h('span', { class: ['pill', cls], 'data-testid': testid, 'data-state': st }, st.replace(/_/g, ' '));
}

/** A stacked bar: succeeded | failed | in progress | pending. */
export function progressBar(p, size, opts = {}) {
  const sum = Math.max(size || 0, KINDS.reduce((a, k) => a + p[k], 0)) || 1;
  const bar = h('div', { class: ['progress', opts.small && 'small'], role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': sum, 'aria-valuenow': p.succeeded + p.failed });
  for (const k of KINDS) {
    if (!p[k]) continue;
    bar.append(h('div', { class: ['seg', k], title: `${fmtCount(p[k])} ${KIND_LABEL[k]}`, style: { width: `${(p[k] / sum) * 100}%` }, 'data-kind': k, 'data-count': p[k] }));
  }
  return bar;
}

function legend(p, skipped, extra = {}) {
  const more = (n, label, testid) => (n ? h('span', { class: 'lg', 'data-testid': testid }, h('span', { class: 'lg-n' }, fmtCount(n)), ' ', label) : null);
  return h('div', { class: 'progress-legend' }, KINDS.map((k) => h('span', { class: 'lg', 'data-kind': k },
    h('span', { class: ['swatch', k] }), h('span', { class: 'lg-n', 'data-testid': `count-${k}` }, fmtCount(p[k])), ' ', KIND_LABEL[k])),
  more(skipped, 'skipped', 'count-skipped'), more(extra.regressed, 'regressed', 'count-regressed'),
  more(extra.rolledBack, 'rolled back', 'count-rolled-back'), more(extra.installed, 'run the new version', 'count-installed'));
}

// --- list ----------------------------------------------------------------

function renderList(root, go) {
  const body = h('tbody', {});
  let stream = null;
  let alive = true;
  const load = async () => {
    let res;
    try {
      res = await api('/api/rollouts');
    } catch (e) {
      if (!alive) return;
      if (e instanceof ApiError && e.status === 404) return notAvailable(root);
      mount(body, h('tr', {}, h('td', { colspan: 6, class: 'empty' }, `Could not load rollouts: ${e.message}`)));
      return;
    }
    if (!alive) return;
    const list = (res.rollouts || []).map(normalize);
    if (!list.length) {
      mount(body, h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No rollouts yet.')));
    } else {
      mount(body, list.map((r) => h('tr', { 'data-testid': 'rollout-row', 'data-id': r.id, onclick: () => go(`/rollouts/${enc(r.id)}`) },
        h('td', {}, h('a', { href: `#/rollouts/${enc(r.id)}`, class: 'mono' }, r.name), h('div', { class: 'muted small mono' }, r.id)),
        h('td', {}, statePill(r.state)),
        h('td', { class: 'progress-cell' }, progressBar(r.total, r.size, { small: true }),
          h('div', { class: 'muted small' }, `${fmtCount(r.total.succeeded)} of ${fmtCount(r.size)} updated${r.total.failed ? `, ${fmtCount(r.total.failed)} failed` : ''}`)),
        h('td', {}, r.waves.length ? `${Math.min(r.current + 1, r.waves.length)} of ${r.waves.length}` : '—'),
        h('td', { class: 'mono small' }, r.target),
        h('td', { class: 'muted', title: fmtTime(r.createdAt) }, fmtAgo(r.createdAt)))));
    }
    if (!stream) stream = new EventStream({ types: 'rollout' }, { onEvent: () => soon(), onResync: () => soon() });
  };
  const soon = debounce(load, 250);
  mount(root,
    pageHead('Rollouts', 'Phased firmware rollouts with health-gated waves.', readOnlyReason()
      ? h('span', { class: 'btn primary disabled', 'aria-disabled': 'true', title: readOnlyReason(), 'data-testid': 'new-rollout' }, 'New rollout')
      : h('a', { class: 'btn primary', href: '#/rollouts/new', 'data-testid': 'new-rollout' }, 'New rollout')),
    h('section', { class: 'card table-card' }, h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Rollout'), h('th', {}, 'State'), h('th', {}, 'Progress'), h('th', {}, 'Wave'), h('th', {}, 'Target'), h('th', {}, 'Created'))),
      body))));
  load();
  return () => {
    alive = false;
    soon.cancel();
    if (stream) stream.close();
  };
}

// --- one rollout -----------------------------------------------------------

const EVENT_LABEL = {
  created: 'created', started: 'started', wave_started: 'wave started', notified: 'devices notified',
  wave_succeeded: 'wave passed', baking: 'baking', waiting_approval: 'waiting for approval', approved: 'approved',
  paused: 'paused', resumed: 'resumed', halted: 'halted', cancelled: 'cancelled', completed: 'completed',
  rolled_back: 'rolled back', rollback_failed: 'rollback failed',
};

// deviceTable is the per-device view: state, OTA progress as the device
// reports it (reported.ota_status / ota_progress / ota_error) and, for a
// failed or regressed device, the gate it broke, the value and when.
function deviceTable(devs, waves) {
  if (!devs.length) return h('div', { class: 'muted small' }, 'No devices yet.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table small', 'data-testid': 'rollout-devices' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Wave'), h('th', {}, 'State'), h('th', {}, 'OTA'), h('th', {}, 'Failure'))),
    h('tbody', {}, devs.map((d) => {
      const ota = d.ota || null;
      const pct = ota && ota.progress != null ? Number(ota.progress) : null;
      return h('tr', { 'data-testid': 'device-row', 'data-thing': d.thing, 'data-state': d.state },
        h('td', {}, h('a', { class: 'mono', href: `#/things/${enc(d.thing)}` }, d.thing)),
        h('td', {}, (waves[d.wave] || {}).name || String(d.wave + 1)),
        h('td', {}, statePill(d.state, 'device-state'), d.before ? h('span', { class: 'muted small' }, ` was ${d.before.replace(/_/g, ' ')}`) : null,
          d.installed ? h('span', { class: 'muted small', title: 'reports the new version' }, ' · new version') : null),
        h('td', { 'data-testid': 'device-ota', 'data-ota': ota ? ota.status : '' }, ota ? [
          h('span', {}, ota.status || '—'),
          pct != null && ota.status !== 'succeeded' ? h('div', { class: 'progress small', role: 'progressbar', 'aria-valuenow': pct, 'aria-valuemax': 100 },
            h('div', { class: 'seg inProgress', style: { width: `${Math.max(0, Math.min(100, pct))}%` } })) : null,
          ota.error ? h('div', { class: 'muted small' }, ota.error) : null] : h('span', { class: 'muted' }, '—')),
        h('td', { class: 'small', 'data-testid': 'device-failure', 'data-gate': d.failure ? d.failure.gate : '' }, d.failure
          ? [h('code', {}, d.failure.gate), ' ', h('span', { class: 'mono' }, d.failure.value || ''), h('div', { class: 'muted' }, fmtTime(d.failure.time))]
          : d.reason || ''));
    }))));
}

function renderOne(root, id) {
  let alive = true;
  const head = h('div', { class: 'rollout-head' });
  const waves = h('div', { class: 'waves', 'data-testid': 'waves' });
  const devices = h('section', { class: 'card', 'data-testid': 'devices-card' });
  const side = h('div', { class: 'rollout-side' });
  const actionError = h('div', { class: 'form-error', role: 'alert', 'data-testid': 'action-error' });
  mount(root, h('nav', { class: 'crumbs' }, h('a', { href: '#/rollouts' }, 'Rollouts'), h('span', { class: 'sep' }, '/'), h('span', { class: 'mono' }, id)),
    head, actionError, h('div', { class: 'rollout-grid' }, h('div', {}, waves, devices), side));

  const act = async (action, query = {}) => {
    actionError.textContent = '';
    try {
      render(normalize(await api(`/api/rollouts/${enc(id)}/${action}` + qs(query), { method: 'POST' })));
    } catch (e) {
      actionError.textContent = `${action}: ${e.message}`;
    }
  };

  // Destructive actions ask once more, inline (no browser dialogs).
  const readOnly = readOnlyReason();
  const confirmButton = (label, action, cls) => {
    const b = h('button', { class: ['btn', cls], type: 'button', 'data-testid': `rollout-${action}`, disabled: !!readOnly, title: readOnly || null }, label);
    b.addEventListener('click', () => {
      if (b.dataset.armed) return act(action);
      b.dataset.armed = '1';
      b.textContent = `Confirm ${label.toLowerCase()}`;
      setTimeout(() => {
        delete b.dataset.armed;
        b.textContent = label;
      }, 4000);
    });
    return b;
  };

  const render = (r) => {
    if (!alive) return;
    document.title = `${r.name} · Umbra`;
    const st = r.state;
    const button = (label, action, cls, query) => h('button', { class: ['btn', cls], type: 'button', 'data-testid': `rollout-${action}`, disabled: !!readOnly, title: readOnly || null, onclick: () => act(action, query) }, label);
    const buttons = [
      st === 'created' ? button('Start', 'start', 'primary') : null,
      st === 'waiting_approval' ? button(`Approve ${r.waves[r.current]?.name || 'next wave'}`, 'approve', 'primary', { wave: r.current }) : null,
      ['running', 'baking', 'waiting_approval'].includes(st) ? button('Pause', 'pause') : null,
      st === 'paused' ? button('Resume', 'resume', 'primary') : null,
      ['created', 'running', 'baking', 'waiting_approval', 'paused', 'halted'].includes(st) ? confirmButton('Cancel', 'cancel') : null,
      st !== 'created' && st !== 'rolled_back' ? confirmButton('Roll back', 'rollback', 'danger') : null,
    ];
    mount(head,
      h('header', { class: 'page-head' },
        h('div', {}, h('h1', {}, h('span', { class: 'mono' }, r.name), ' ', statePill(st)),
          h('p', { class: 'muted' }, 'Target ', h('code', {}, r.target || '*'), ` · ${fmtCount(r.size)} devices in ${r.waves.length} waves`,
            r.createdAt ? ` · created ${fmtTime(r.createdAt)}` : '')),
        h('div', { class: 'actions' }, buttons)),
      r.reason && ['halted', 'rolled_back'].includes(st) ? h('div', { class: 'banner bad', 'data-testid': 'halt-reason' }, h('strong', {}, st === 'halted' ? 'Halted: ' : 'Rolled back: '), r.reason) : null,
      r.notice ? h('div', { class: 'banner', 'data-testid': 'rollout-notice' }, r.notice) : null,
      st === 'waiting_approval' ? h('div', { class: 'banner', 'data-testid': 'approval-banner' }, `Wave ${r.waves[r.current]?.name} needs approval before it starts.`) : null,
      h('section', { class: 'card overall' },
        h('div', { class: 'card-head' }, h('h2', {}, 'Overall'), h('span', { class: 'muted small' }, `${fmtCount(r.total.succeeded)} of ${fmtCount(r.size)} updated`)),
        progressBar(r.total, r.size), legend(r.total, 0, { installed: r.installed, rolledBack: r.rolledBack })));
    mount(waves, r.waves.map((w, i) => h('section', { class: ['card', 'wave', i === r.current && !['completed', 'created'].includes(st) && 'current'], 'data-testid': 'wave', 'data-wave': i },
      h('div', { class: 'card-head' },
        h('span', { class: 'wave-n' }, String(i + 1)),
        h('h2', {}, w.name), statePill(w.state, 'wave-state'), h('span', { class: 'spacer' }),
        h('span', { class: 'muted small mono' }, w.selector), h('span', { class: 'muted small' }, `${fmtCount(w.size)} devices`)),
      progressBar(w.progress, w.size),
      h('div', { class: 'wave-foot' }, legend(w.progress, w.skipped, w), h('span', { class: 'muted small' }, w.rules.join(' · '))))));
    const evs = r.events.slice().reverse();
    mount(side,
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Desired patch')), jsonView(r.patch),
        r.spec.successCondition || r.spec.failureCondition ? h('dl', { class: 'conds small' },
          r.spec.successCondition ? [h('dt', {}, 'success'), h('dd', { class: 'mono' }, r.spec.successCondition)] : null,
          r.spec.failureCondition ? [h('dt', {}, 'failure'), h('dd', { class: 'mono' }, r.spec.failureCondition)] : null) : null),
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Events'), h('span', { class: 'muted small' }, `${fmtCount(r.events.length)}`)),
        h('ul', { class: 'event-list', 'data-testid': 'rollout-events' }, evs.slice(0, 40).map((e) => h('li', { class: `ev-${e.type}` },
          h('span', { class: 'ev-time mono small muted', title: fmtTime(e.time) }, fmtTime(e.time).slice(11)),
          h('span', { class: 'ev-type' }, EVENT_LABEL[e.type] || e.type.replace(/^device_/, '').replace(/_/g, ' ')),
          e.thing ? h('a', { class: 'mono small', href: `#/things/${enc(e.thing)}` }, e.thing) : null,
          e.message ? h('span', { class: 'muted small ev-msg' }, e.message) : null)))));
  };

  const load = async () => {
    let raw;
    try {
      raw = await api(`/api/rollouts/${enc(id)}`);
    } catch (e) {
      if (!alive) return;
      if (e instanceof ApiError && e.status === 404) {
        try {
          await api('/api/rollouts');
        } catch (e2) {
          if (e2.status === 404) return notAvailable(root);
        }
        mount(head, h('div', { class: 'banner' }, `No rollout “${id}”.`));
        return;
      }
      mount(head, h('div', { class: 'banner' }, `Could not load the rollout: ${e.message}`));
      return;
    }
    const r = normalize(raw);
    render(r);
    try {
      const res = await api(`/api/rollouts/${enc(id)}/devices`);
      if (alive) mount(devices, h('div', { class: 'card-head' }, h('h2', {}, 'Devices'), h('span', { class: 'muted small' }, fmtCount((res.devices || []).length))),
        deviceTable(res.devices || [], r.waves));
    } catch (e) {
      if (alive) mount(devices, h('div', { class: 'muted small' }, `Could not load the devices: ${e.message}`));
    }
  };
  const soon = debounce(load, 150);
  const stream = new EventStream({ types: 'rollout' }, {
    onEvent: (ev) => {
      const rid = ev.data && ev.data.rollout;
      if (rid === undefined || String(rid) === id) soon();
    },
    onResync: () => soon(),
  });
  load();
  return () => {
    alive = false;
    soon.cancel();
    stream.close();
  };
}

// --- create ----------------------------------------------------------------

function renderNew(root, go) {
  const input = (name, attrs = {}) => h('input', { name, class: 'input', spellcheck: 'false', ...attrs });
  const name = input('name', { placeholder: 'fw-2.2.0', required: true, 'data-testid': 'rollout-name' });
  const target = input('target', { class: 'input mono', placeholder: '* (every thing)', 'data-testid': 'rollout-target' });
  const patch = h('textarea', { class: 'editor mono', rows: 4, spellcheck: 'false', 'data-testid': 'rollout-patch' });
  patch.value = '{\n  "ota_url": "https://updates.example.com/esp32-s3/2.2.0.bin",\n  "target_version": "2.2.0"\n}';
  const success = input('successCondition', { class: 'input mono', placeholder: 'default: reported.firmware_version = target_version' });
  const failure = input('failureCondition', { class: 'input mono', placeholder: 'shadow.reported.ota_status:failed' });
  const onFailure = h('select', { class: 'select' }, h('option', { value: 'halt' }, 'halt'), h('option', { value: 'rollback' }, 'halt and roll back'));
  const start = h('input', { type: 'checkbox', checked: true, 'data-testid': 'rollout-start' });
  const wavesBox = h('div', { class: 'wave-rows' });
  const preview = h('div', { class: 'preview', 'data-testid': 'rollout-preview' }, h('div', { class: 'muted' }, 'Preview shows which devices each wave takes; creating right after freezes exactly that plan.'));
  const err = h('div', { class: 'form-error', role: 'alert', 'data-testid': 'rollout-error' });
  const rows = [];
  // The preview's plan token, kept while the spec is unchanged: create
  // then freezes exactly the previewed waves (or says the fleet changed).
  let previewed = null;
  const addWave = (wname, sel, thr = 100, fail = 0, approval = false) => {
    const r = {
      name: h('input', { class: 'input', value: wname, 'aria-label': 'wave name' }),
      sel: h('input', { class: 'input mono', value: sel, 'aria-label': 'selector: a query, or N%' }),
      thr: h('input', { class: 'input num', type: 'number', min: 0, max: 100, value: thr, 'aria-label': 'success threshold %' }),
      fail: h('input', { class: 'input num', type: 'number', min: 0, max: 100, value: fail, 'aria-label': 'failure threshold %' }),
      approval: h('input', { type: 'checkbox', checked: approval, 'aria-label': 'requires approval before the wave starts' }),
    };
    r.el = h('div', { class: 'wave-row', 'data-testid': 'wave-row' }, r.name, r.sel, r.thr, r.fail, h('label', { class: 'check' }, r.approval, 'approval'),
      h('button', { class: 'btn small', type: 'button', title: 'remove', onclick: () => { rows.splice(rows.indexOf(r), 1); r.el.remove(); } }, '✕'));
    rows.push(r);
    wavesBox.append(r.el);
  };
  addWave('canary', 'attributes.deployment_ring:canary', 100, 0);
  addWave('early', '10%', 95, 5, true);
  addWave('broad', '50%', 95, 5);
  addWave('all', '100%', 95, 5);

  const spec = () => {
    let p;
    try {
      p = JSON.parse(patch.value);
    } catch (e) {
      throw new Error(`desired patch: ${e.message}`);
    }
    return {
      name: name.value.trim(),
      target: target.value.trim() || '*',
      patch: p,
      successCondition: success.value.trim() || undefined,
      failureCondition: failure.value.trim() || undefined,
      onFailure: onFailure.value,
      waves: rows.map((r) => {
        const sel = r.sel.value.trim();
        const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(sel);
        return {
          name: r.name.value.trim(),
          ...(pct ? { percent: Number(pct[1]) } : { query: sel }),
          successThreshold: Number(r.thr.value),
          failureThreshold: Number(r.fail.value),
          requireApproval: r.approval.checked || undefined,
        };
      }),
    };
  };

  const showErr = (e) => {
    err.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
  };

  const doPreview = async () => {
    err.textContent = '';
    try {
      const body = spec();
      const res = await api('/api/rollouts/preview', { method: 'POST', body });
      previewed = res.plan ? { key: JSON.stringify(body), plan: res.plan } : null;
      const ws = res.waves || [];
      const total = ws.reduce((a, w) => a + num(w.count), 0);
      mount(preview, h('div', { class: 'muted small' }, `${fmtCount(total)} devices in ${ws.length} waves`),
        (res.empty || []).length ? h('div', { class: 'banner bad', 'data-testid': 'preview-empty' }, `${res.empty.join(', ')} select no device: create will refuse this.`) : null,
        previewed ? h('div', { class: 'muted small', 'data-testid': 'preview-plan', 'data-seed': res.plan.seed }, 'Create freezes exactly these waves (or says what changed in the fleet).') : null,
        ws.map((w, i) => h('div', { class: 'preview-wave', 'data-testid': 'preview-wave' },
        h('div', { class: 'preview-head' }, h('strong', {}, `${i + 1}. ${w.name}`), h('span', { class: 'muted', 'data-testid': 'preview-count' }, `${fmtCount(w.count)} devices`)),
        w.count ? h('div', { class: 'chips' }, (w.things || []).slice(0, 16).map((t) => h('a', { class: 'chip mono', href: `#/things/${enc(t)}` }, t)),
          w.count > 16 ? h('span', { class: 'muted small' }, `+${fmtCount(w.count - 16)} more`) : null) : h('div', { class: 'muted small' }, 'no devices'))));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return notAvailable(root);
      showErr(e);
    }
  };

  const create = async (e) => {
    e.preventDefault();
    err.textContent = '';
    try {
      const body = spec();
      const plan = previewed && previewed.key === JSON.stringify(body) ? previewed.plan : undefined;
      const v = await api('/api/rollouts', { method: 'POST', body: { ...body, plan, start: start.checked } });
      go(`/rollouts/${enc(v.id)}`);
    } catch (e2) {
      if (e2 instanceof ApiError && e2.status === 404) return notAvailable(root);
      showErr(e2);
    }
  };

  const field = (label, el, hint) => h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), el, hint ? h('span', { class: 'muted small' }, hint) : null);
  mount(root,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/rollouts' }, 'Rollouts'), h('span', { class: 'sep' }, '/'), h('span', {}, 'New')),
    pageHead('New rollout', 'Waves run in order; each is judged on its thresholds before the next starts.'),
    h('form', { class: 'rollout-form', onsubmit: create },
      h('section', { class: 'card form-card' },
        field('Name', name),
        field('Target query', target, 'Fleet query language; the plan is frozen when the rollout starts.'),
        field('Desired patch', patch, 'Written to each device’s desired state when its wave starts.'),
        h('div', { class: 'two' }, field('Success condition', success), field('Failure condition', failure)),
        field('On failure', onFailure),
        h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Waves'),
          h('div', { class: 'wave-row wave-row-head muted small' }, h('span', {}, 'name'), h('span', {}, 'selector (query or N%)'), h('span', {}, 'success %'), h('span', {}, 'halt at fail %'), h('span', {}, 'gate'), h('span', {}, '')),
          wavesBox,
          h('div', {}, h('button', { class: 'btn small', type: 'button', onclick: () => addWave(`wave-${rows.length + 1}`, '100%', 95, 5) }, '+ Add wave'))),
        err,
        h('div', { class: 'form-actions' },
          h('label', { class: 'check' }, start, 'start now'),
          h('span', { class: 'spacer' }),
          h('button', { class: 'btn', type: 'button', onclick: doPreview, 'data-testid': 'rollout-preview-btn' }, 'Preview waves'),
          h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'rollout-create' }, 'Create rollout'))),
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', {}, 'Preview')), preview)));
  // Say so at once on a server without rollouts.
  api('/api/rollouts').catch((e) => {
    if (e instanceof ApiError && e.status === 404) notAvailable(root);
  });
  name.focus();
  return () => {};
}
