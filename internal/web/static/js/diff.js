// Differences between two JSON documents, leaf by leaf (arrays, as in
// shadows, are values replaced whole), and the merge patch that turns one
// desired state into another.

import { isObject } from './dom.js';

function flatten(v, prefix, out) {
  if (isObject(v) && Object.keys(v).length) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out.set(prefix, v);
  }
  return out;
}

/** [{path, kind: 'added'|'removed'|'changed', from, to}] sorted by path. */
export function diff(before, after) {
  const a = flatten(before ?? {}, '', new Map());
  const b = flatten(after ?? {}, '', new Map());
  const out = [];
  for (const [p, v] of b) {
    if (!a.has(p)) out.push({ path: p, kind: 'added', to: v });
    else if (JSON.stringify(a.get(p)) !== JSON.stringify(v)) out.push({ path: p, kind: 'changed', from: a.get(p), to: v });
  }
  for (const [p, v] of a) if (!b.has(p)) out.push({ path: p, kind: 'removed', from: v });
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

/**
 * The shadow update that turns desired `from` into `to`: changed and new
 * keys with their values, removed keys as null (a shadow update merges, and
 * null deletes). Returns null when nothing changed.
 */
export function mergePatch(from, to) {
  if (!isObject(from) || !isObject(to)) return JSON.stringify(from) === JSON.stringify(to) ? null : to;
  const patch = {};
  for (const k of Object.keys(from)) if (!(k in to)) patch[k] = null;
  for (const [k, v] of Object.entries(to)) {
    if (!(k in from)) patch[k] = v;
    else if (isObject(v) && isObject(from[k])) {
      const sub = mergePatch(from[k], v);
      if (sub !== null) patch[k] = sub;
    } else if (JSON.stringify(v) !== JSON.stringify(from[k])) patch[k] = v;
  }
  return Object.keys(patch).length ? patch : null;
}
