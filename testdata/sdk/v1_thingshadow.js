'use strict';
// aws-iot-device-sdk (v1): thingShadow over mqtts with a device certificate,
// used the way its README and examples use it (register, then get/update/
// delete; results on 'status', deltas on 'delta'). See common.js for the
// protocol with the Go test.

const awsIot = require('aws-iot-device-sdk');
const { emit, fail, waitFor, nextLine, env, Inbox, finish } = require('./common');

const thing = env('UMBRA_THING');
const WAIT = 15000;

const shadows = awsIot.thingShadow({
  host: env('UMBRA_HOST'),
  port: Number(env('UMBRA_PORT')),
  protocol: 'mqtts',
  clientId: thing,
  caPath: env('UMBRA_CA'),
  certPath: env('UMBRA_CERT'),
  keyPath: env('UMBRA_KEY'),
  reconnectPeriod: 500,
});

const status = new Inbox();
const deltas = new Inbox();
shadows.on('status', (name, stat, clientToken, state) => status.push({ name, stat, clientToken, state }));
shadows.on('delta', (name, state) => deltas.push({ name, state }));
shadows.on('timeout', (name, clientToken) => status.push({ name, stat: 'timeout', clientToken }));
shadows.on('error', (err) => emit('client-error', { error: String(err) }));

// op runs one thingShadow operation and waits for its own status.
async function op(step, start) {
  const token = start();
  if (token === null) fail(step, new Error('the SDK refused the operation (another one pending?)'));
  const s = await status.next((x) => x.clientToken === token, WAIT, step + ' status');
  return s;
}

async function main() {
  await waitFor(shadows, 'connect', null, WAIT, 'connect');
  emit('connected');
  await new Promise((resolve, reject) => {
    shadows.register(thing, {}, (err) => (err ? reject(err) : resolve()));
  });
  emit('registered');

  let s = await op('get-absent', () => shadows.get(thing));
  emit('get-absent', { stat: s.stat, code: s.state.code, message: s.state.message });

  s = await op('report-boot', () => shadows.update(thing, { state: { reported: { temp: 20, fan: 'off' } } }));
  emit('report-boot', { stat: s.stat, version: s.state.version });

  emit('wait-desired');
  await nextLine();
  let d = await deltas.next((x) => x.state.state && x.state.state.fan !== undefined, WAIT, 'delta fan');
  emit('delta', { version: d.state.version, state: d.state.state });

  s = await op('report-acted', () => shadows.update(thing, { state: { reported: { fan: d.state.state.fan } } }));
  emit('report-acted', { stat: s.stat, version: s.state.version });
  s = await op('get-converged', () => shadows.get(thing));
  emit('get-converged', { stat: s.stat, version: s.state.version, desired: s.state.state.desired || null, delta: s.state.state.delta || null, reported: s.state.state.reported });

  // The AWS Embedded C / ESP32 habit through the SDK's plain publish.
  const nul = deltas.next((x) => x.state.state && x.state.state.color === 'red', WAIT, 'delta after NUL-terminated update');
  shadows.publish(`$aws/things/${thing}/shadow/update`, Buffer.from('{"state":{"desired":{"color":"red"}}}\u0000', 'utf8'), { qos: 1 });
  d = await nul;
  emit('nul-delta', { version: d.state.version, state: d.state.state });

  // Delete, then update: the SDK sends the version delete/accepted carried.
  s = await op('delete', () => shadows.delete(thing));
  emit('delete', { stat: s.stat, version: s.state.version });
  s = await op('update-after-delete', () => shadows.update(thing, { state: { reported: { temp: 21 } } }));
  emit('update-after-delete', { stat: s.stat, version: s.state.version, code: s.state.code, message: s.state.message });
  s = await op('get-recreated', () => shadows.get(thing));
  emit('get-recreated', { stat: s.stat, version: s.state.version, reported: s.state.state && s.state.state.reported });

  shadows.unregister(thing);
  await new Promise((resolve) => shadows.end(false, resolve));
  finish();
}

main().catch((err) => fail('v1', err));
