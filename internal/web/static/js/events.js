// The live event stream, GET /api/events (server-sent events).
//
// It is read with fetch() rather than EventSource because EventSource
// cannot send the Authorization header that an API key needs; one code
// path serves both modes. The stream reconnects with backoff, and tells the
// view to resynchronise (refetch) after any gap, since events sent while it
// was away are not replayed.

import { authHeaders, qs, ApiError, notifyUnauthorized } from './api.js';

const stateListeners = new Set();
let globalState = 'idle';

/** fn(state) on every change of the stream state: 'connecting', 'live',
 * 'reconnecting', 'error', 'idle'. */
export function onStreamState(fn) {
  stateListeners.add(fn);
  fn(globalState);
  return () => stateListeners.delete(fn);
}

function setGlobal(s) {
  globalState = s;
  stateListeners.forEach((fn) => fn(s));
}

export class EventStream {
  /**
   * @param {object} params  filters: {thing, query, group, types}
   * @param {object} handlers {onEvent(ev), onResync(), onError(err)}
   */
  constructor(params, handlers) {
    this.params = params;
    this.handlers = handlers;
    this.closed = false;
    this.ctrl = null;
    this.run();
  }

  close() {
    this.closed = true;
    if (this.ctrl) this.ctrl.abort();
    setGlobal('idle');
  }

  async run() {
    let backoff = 500;
    let first = true;
    while (!this.closed) {
      setGlobal(first ? 'connecting' : 'reconnecting');
      this.ctrl = new AbortController();
      try {
        const res = await fetch('/api/events' + qs(this.params), {
          headers: authHeaders({ Accept: 'text/event-stream' }),
          signal: this.ctrl.signal,
          cache: 'no-store',
        });
        if (!res.ok) {
          let body = null;
          try {
            body = await res.json();
          } catch {}
          const err = new ApiError(res.status, body, '/api/events');
          if (res.status >= 400 && res.status < 500) {
            // A bad filter or a missing key will not fix itself by retrying.
            setGlobal('error');
            if (res.status === 401) notifyUnauthorized(err);
            this.handlers.onError?.(err);
            return;
          }
          throw err;
        }
        setGlobal('live');
        if (!first) this.handlers.onResync?.();
        first = false;
        backoff = 500;
        await this.read(res.body);
      } catch (e) {
        if (this.closed) return;
      }
      if (this.closed) return;
      first = false;
      setGlobal('reconnecting');
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        this.dispatch(block);
      }
    }
  }

  dispatch(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      const val = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
      if (field === 'event') type = val;
      else if (field === 'data') data.push(val);
    }
    if (!data.length) return;
    let ev;
    try {
      ev = JSON.parse(data.join('\n'));
    } catch {
      return;
    }
    if (type === 'dropped') {
      // The server dropped events for us: what we show may be stale.
      this.handlers.onResync?.();
      return;
    }
    this.handlers.onEvent?.({ ...ev, type: ev.type || type });
  }
}
