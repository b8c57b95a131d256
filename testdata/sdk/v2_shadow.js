'use strict';
// aws-iot-device-sdk-v2: an MQTT 5 client over plain TCP and the
// request-response shadow client (iotshadow.IotShadowClientv2), used the way
// the SDK's own shadow sample uses it. See common.js for the protocol with
// the Go test.

const { mqtt5, iotshadow } = require('aws-iot-device-sdk-v2');
const { mqtt_request_response } = require('aws-crt');
const { emit, fail, waitFor, nextLine, env, Inbox, finish } = require('./common');

const host = env('UMBRA_HOST');
const port = Number(env('UMBRA_PORT'));
const thing = env('UMBRA_THING');
const WAIT = 15000;

// errorCode digs the shadow service's error code out of a rejected request.
function errorCode(err) {
  const m = err && err.modeledError;
  return m ? { code: m.code, message: m.message, clientToken: m.clientToken } : { error: String(err) };
}

async function expectReject(step, p) {
  try {
    const r = await p;
    fail(step, new Error('accepted, want rejected: ' + JSON.stringify(r)));
  } catch (err) {
    if (!err.modeledError) fail(step, err);
    return errorCode(err);
  }
}

// openStream opens a streaming operation and collects its events in an
// Inbox, resolving once the subscription is established.
async function openStream(op, name) {
  const events = new Inbox();
  op.on('incomingPublish', (e) => events.push(e.message));
  op.on('incomingPublishError', (e) => emit(name + ':publish-error', { error: String(e.error) }));
  const established = waitFor(op, 'subscriptionStatus',
    (e) => e.type === mqtt_request_response.SubscriptionStatusEventType.SubscriptionEstablished, WAIT, name + ' subscription');
  op.open();
  await established;
  return events;
}

async function main() {
  const client = new mqtt5.Mqtt5Client({
    hostName: host,
    port,
    connectProperties: { clientId: thing, keepAliveIntervalSeconds: 60, sessionExpiryIntervalSeconds: 3600 },
    // RejoinPostSuccess would start clean again after stop() and start().
    sessionBehavior: mqtt5.ClientSessionBehavior.RejoinAlways,
    retryJitterMode: mqtt5.RetryJitterType.None,
    minReconnectDelayMs: 100,
    maxReconnectDelayMs: 1000,
  });
  const connected = waitFor(client, 'connectionSuccess', null, WAIT, 'CONNACK');
  client.on('connectionFailure', (e) => emit('connection-failure', { error: String(e.error) }));
  client.start();
  const conn = await connected;
  emit('connected', { reasonCode: conn.connack.reasonCode, sessionPresent: conn.connack.sessionPresent });

  const shadow = iotshadow.IotShadowClientv2.newFromMqtt5(client, {
    maxRequestResponseSubscriptions: 4,
    maxStreamingSubscriptions: 4,
    operationTimeoutInSeconds: 10,
  });

  const deltas = await openStream(shadow.createShadowDeltaUpdatedStream({ thingName: thing }), 'delta-stream');
  const nextDelta = (what, pred) => deltas.next(pred, WAIT, what);
  emit('delta-stream-open');

  // get on a new thing: 404.
  emit('get-absent', await expectReject('get-absent', shadow.getShadow({ thingName: thing })));

  // The device reports on boot.
  let r = await shadow.updateShadow({ thingName: thing, state: { reported: { led: false, fw: '1.0.0' } } });
  emit('report-boot', { version: r.version, clientToken: r.clientToken, reported: r.state.reported });

  // An app (the Go test, over HTTP) sets desired; the device gets the delta.
  emit('wait-desired');
  await nextLine();
  let d = await nextDelta('delta led', (m) => m.state && m.state.led !== undefined);
  emit('delta', { version: d.version, state: d.state });

  r = await shadow.getShadow({ thingName: thing });
  emit('get-delta', { version: r.version, delta: r.state.delta, desired: r.state.desired });

  // The device acts and reports: the shadow converges.
  r = await shadow.updateShadow({ thingName: thing, state: { reported: { led: d.state.led } } });
  emit('report-acted', { version: r.version });
  r = await shadow.getShadow({ thingName: thing });
  emit('get-converged', { version: r.version, desired: r.state.desired || null, delta: r.state.delta || null, reported: r.state.reported });

  // Optimistic locking: a stale version is 409, the current one is accepted.
  emit('conflict', await expectReject('conflict',
    shadow.updateShadow({ thingName: thing, state: { reported: { led: true } }, version: 1 })));
  r = await shadow.updateShadow({ thingName: thing, state: { reported: { note: 'locked' } }, version: r.version });
  emit('versioned-update', { version: r.version });

  // The AWS Embedded C / ESP32 habit: a C string with its NUL, published raw.
  const nulDelta = nextDelta('delta after NUL-terminated update', (m) => m.state && m.state.color === 'blue');
  await client.publish({
    topicName: `$aws/things/${thing}/shadow/update`,
    qos: mqtt5.QoS.AtLeastOnce,
    payload: Buffer.from('{"state":{"desired":{"color":"blue"}}}\u0000', 'utf8'),
  });
  d = await nulDelta;
  emit('nul-delta', { version: d.version, state: d.state });
  r = await shadow.updateShadow({ thingName: thing, state: { reported: { color: 'blue' } } });

  // Named shadows.
  const named = await openStream(shadow.createNamedShadowDeltaUpdatedStream({ thingName: thing, shadowName: 'config' }), 'named-delta-stream');
  const namedDelta = named.next((m) => m.state && m.state.interval === 30, WAIT, 'named delta');
  r = await shadow.updateNamedShadow({ thingName: thing, shadowName: 'config', state: { desired: { interval: 30 } } });
  emit('named-update', { version: r.version });
  d = await namedDelta;
  emit('named-delta', { version: d.version, state: d.state });
  r = await shadow.getNamedShadow({ thingName: thing, shadowName: 'config' });
  emit('named-get', { version: r.version, desired: r.state.desired });
  r = await shadow.deleteNamedShadow({ thingName: thing, shadowName: 'config' });
  emit('named-delete', { version: r.version });
  emit('named-get-deleted', await expectReject('named-get-deleted', shadow.getNamedShadow({ thingName: thing, shadowName: 'config' })));

  // Offline delta: the device goes away, desired changes meanwhile, the
  // device comes back (persistent session) and gets the delta.
  const stopped = waitFor(client, 'stopped', null, WAIT, 'stop');
  client.stop();
  await stopped;
  emit('offline');
  await nextLine();
  const offlineDelta = nextDelta('delta while offline', (m) => m.state && m.state.mode === 'eco');
  const again = waitFor(client, 'connectionSuccess', null, WAIT, 'reconnect');
  client.start();
  const c2 = await again;
  emit('reconnected', { sessionPresent: c2.connack.sessionPresent });
  d = await offlineDelta;
  emit('offline-delta', { version: d.version, state: d.state });

  // Delete the classic shadow.
  r = await shadow.deleteShadow({ thingName: thing });
  emit('delete', { version: r.version });
  emit('get-deleted', await expectReject('get-deleted', shadow.getShadow({ thingName: thing })));

  shadow.close();
  const done = waitFor(client, 'stopped', null, WAIT, 'final stop');
  client.stop();
  await done;
  client.close();
  finish();
}

main().catch((err) => fail('v2', err));
