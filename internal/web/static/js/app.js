// The dashboard shell: sidebar, hash router, login, live-stream indicator.
// Each view is a module exporting render(root, params, ctx) that returns a
// cleanup function (closing its event stream and timers).

import { h, mount } from './dom.js';
import { apiKey, setApiKey, onUnauthorized, ApiError, loadIdentity, identity } from './api.js';
import { onStreamState } from './events.js';
import * as fleet from './fleet.js';
import * as thing from './thing.js';
import * as rollouts from './rollouts.js';

const routes = [
  { re: /^\/fleet$/, view: fleet, nav: 'fleet' },
  { re: /^\/things\/([^/]+)$/, view: thing, nav: 'fleet', args: ['thing'] },
  { re: /^\/rollouts(?:\/(new|[^/]+))?$/, view: rollouts, nav: 'rollouts', args: ['id'] },
];

let cleanup = null;
let main;
let navLinks = {};
let authBox;
let loginShown = false;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/fleet';
  const [path, search] = raw.split('?');
  return { path, params: Object.fromEntries(new URLSearchParams(search || '')) };
}

/** Navigate to a dashboard path with query parameters. */
export function go(path, params = {}, { replace = false } = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  const hash = '#' + path + (s ? '?' + s : '');
  if (replace) {
    history.replaceState(null, '', hash);
    route();
  } else location.hash = hash;
}

/** Change the query parameters of the current route without re-rendering. */
export function setParams(params) {
  const { path } = parseHash();
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  history.replaceState(null, '', '#' + path + (s ? '?' + s : ''));
}

function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch {}
    cleanup = null;
  }
  const { path, params } = parseHash();
  let match = null;
  for (const r of routes) {
    const m = path.match(r.re);
    if (m) {
      match = r;
      (r.args || []).forEach((name, i) => {
        if (m[i + 1] !== undefined) params[name] = decodeURIComponent(m[i + 1]);
      });
      break;
    }
  }
  for (const [name, a] of Object.entries(navLinks)) a.classList.toggle('active', match && match.nav === name);
  const root = h('div', { class: 'view' });
  mount(main, root);
  if (!match) {
    mount(root, h('div', { class: 'empty-state' }, h('h2', {}, 'Not found'), h('p', {}, 'No such page. '), h('a', { href: '#/fleet' }, 'Go to the fleet')));
    return;
  }
  document.title = 'Umbra';
  cleanup = match.view.render(root, params, { go, setParams }) || null;
}

function streamIndicator() {
  const dot = h('span', { class: 'dot' });
  const label = h('span', {}, 'Idle');
  const el = h('div', { class: 'stream', 'data-testid': 'stream-state', title: 'Live updates from GET /api/events' }, dot, label);
  const text = { idle: 'Idle', connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', error: 'Stream error' };
  onStreamState((s) => {
    el.dataset.state = s;
    label.textContent = text[s] || s;
  });
  return el;
}

function renderAuthBox() {
  if (!authBox) return;
  const who = identity();
  if (apiKey()) {
    mount(authBox,
      who ? h('div', { class: 'who small', 'data-testid': 'whoami', title: 'the API key you signed in with, and its role' }, `${who.name} · ${who.role}`) : null,
      h('button', { class: 'link-button', onclick: signOut, 'data-testid': 'sign-out' }, 'Sign out'));
  } else mount(authBox);
}

function signOut() {
  setApiKey('');
  renderAuthBox();
  showLogin('Signed out.');
}

function showLogin(message) {
  if (loginShown) return;
  loginShown = true;
  if (cleanup) {
    try {
      cleanup();
    } catch {}
    cleanup = null;
  }
  const input = h('input', {
    type: 'password', id: 'api-key', name: 'api-key', autocomplete: 'current-password',
    placeholder: 'API key', spellcheck: 'false', required: true,
  });
  const err = h('div', { class: 'form-error', role: 'alert', 'data-testid': 'login-error' }, message && message !== 'Signed out.' ? message : '');
  const note = message === 'Signed out.' ? h('div', { class: 'form-note' }, message) : null;
  const button = h('button', { class: 'btn primary', type: 'submit' }, 'Sign in');
  const form = h('form', {
    class: 'login-card', 'data-testid': 'login',
    onsubmit: async (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      button.disabled = true;
      setApiKey(key);
      try {
        await loadIdentity();
        loginShown = false;
        overlay.remove();
        renderAuthBox();
        route();
      } catch (e2) {
        setApiKey('');
        err.textContent = e2 instanceof ApiError && e2.status === 401 ? 'That API key is not valid.' : `Could not sign in: ${e2.message}`;
        button.disabled = false;
        input.select();
      }
    },
  },
  h('div', { class: 'login-brand' }, logo(), h('span', {}, 'Umbra')),
  h('h1', {}, 'Sign in'),
  h('p', { class: 'muted' }, 'This broker requires an API key. It is kept in this browser tab only (sessionStorage) and sent as ',
    h('code', {}, 'Authorization: Bearer'), '.'),
  h('label', { for: 'api-key' }, 'API key'),
  input, err, note, button,
  h('p', { class: 'muted small' }, 'Create keys with ', h('code', {}, 'umbra keygen'), ' and list them under ', h('code', {}, 'auth.api_keys'), '.'));
  const overlay = h('div', { class: 'login-overlay' }, form);
  document.body.append(overlay);
  mount(main);
  input.focus();
}

function logo() {
  const img = h('img', { src: new URL('../favicon.svg', import.meta.url).href, alt: '', width: 24, height: 24 });
  return img;
}

async function start() {
  const app = document.getElementById('app');
  navLinks = {
    fleet: h('a', { href: '#/fleet', 'data-testid': 'nav-fleet' }, navIcon('fleet'), 'Fleet'),
    rollouts: h('a', { href: '#/rollouts', 'data-testid': 'nav-rollouts' }, navIcon('rollouts'), 'Rollouts'),
  };
  authBox = h('div', { class: 'auth-box' });
  main = h('main', { class: 'main' });
  mount(app, h('div', { class: 'shell' },
    h('nav', { class: 'sidebar' },
      h('a', { class: 'brand', href: '#/fleet' }, logo(), h('span', {}, 'Umbra')),
      h('div', { class: 'nav' }, Object.values(navLinks)),
      h('div', { class: 'sidebar-foot' }, streamIndicator(), authBox)),
    main));
  onUnauthorized((e) => showLogin(apiKey() ? 'Your API key was not accepted.' : ''));
  window.addEventListener('hashchange', () => {
    if (!loginShown) route();
  });
  try {
    await loadIdentity();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // the login is showing
  }
  renderAuthBox();
  route();
}

function navIcon(name) {
  const paths = {
    fleet: 'M3 4h14v3H3zM3 9h14v3H3zM3 14h14v3H3z',
    rollouts: 'M3 15l4-5 3 3 7-9M13 4h4v4',
  };
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('class', 'nav-icon');
  const p = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  p.setAttribute('d', paths[name]);
  svg.append(p);
  return svg;
}

start();
