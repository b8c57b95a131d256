'use strict';
// Shared helpers for the SDK compatibility scripts. The Go test
// (broker/sdk_compat_test.go) runs each script with node, reads one JSON
// object per line from stdout ({"step": name, ...}) and answers on stdin
// when a script waits for it (a line "go" after a step that asks).

const readline = require('readline');

function emit(step, data) {
  process.stdout.write(JSON.stringify(Object.assign({ step }, data || {})) + '\n');
}

function fail(step, err) {
  const detail = {
    error: String((err && err.message) || err),
  };
  if (err && err.modeledError) detail.modeled = err.modeledError;
  if (err && err.stack) detail.stack = String(err.stack).split('\n').slice(0, 4).join(' | ');
  emit(step + ':failed', detail);
  process.exit(1);
}

// waitFor resolves with the first value of an event that satisfies pred, or
// rejects after ms.
function waitFor(emitter, event, pred, ms, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, on);
      reject(new Error('timed out waiting for ' + what));
    }, ms);
    function on(...args) {
      if (!pred || pred(...args)) {
        clearTimeout(timer);
        emitter.removeListener(event, on);
        resolve(args.length <= 1 ? args[0] : args);
      }
    }
    emitter.on(event, on);
  });
}

// Inbox buffers events so that a script can wait for one that arrived
// before it started waiting. next resolves with the first buffered or
// future item satisfying pred (items before it are dropped), or rejects
// after ms.
class Inbox {
  constructor() { this.items = []; this.waiters = []; }
  push(item) {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => !w.try());
  }
  next(pred, ms, what) {
    return new Promise((resolve, reject) => {
      const w = {
        try: () => {
          const i = this.items.findIndex((x) => !pred || pred(x));
          if (i < 0) return false;
          const item = this.items[i];
          this.items.splice(0, i + 1);
          clearTimeout(w.timer);
          resolve(item);
          return true;
        },
      };
      if (w.try()) return;
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error('timed out waiting for ' + what + '; received meanwhile: ' + JSON.stringify(this.items).slice(0, 500)));
      }, ms);
      this.waiters.push(w);
    });
  }
}

// lines gives the lines the Go test writes to stdin, one per call.
const rl = readline.createInterface({ input: process.stdin });
const pending = [];
const queued = [];
rl.on('line', (l) => { if (pending.length) pending.shift()(l); else queued.push(l); });
function nextLine() {
  if (queued.length) return Promise.resolve(queued.shift());
  return new Promise((resolve) => pending.push(resolve));
}

function env(name) {
  const v = process.env[name];
  if (!v) fail('env', new Error('missing environment variable ' + name));
  return v;
}

// finish reports the end and exits: the CRT's native event loop would
// otherwise keep the process alive. Writes to a pipe are synchronous on
// Linux and macOS, so the line is out before the exit.
function finish() {
  emit('done');
  rl.close();
  process.exit(0);
}

module.exports = { emit, fail, waitFor, nextLine, env, Inbox, finish };
