'use strict';
// aws-iot-device-sdk-v2: an MQTT 5 client over plain TCP and the
// request-response jobs client (iotjobs.IotJobsClientv2), used the way the
// SDK's jobs sample uses it. See common.js for the protocol with the Go test.

const { mqtt5, iotjobs } = require('aws-iot-device-sdk-v2');
const { mqtt_request_response } = require('aws-crt');
const { emit, fail, waitFor, nextLine, env, Inbox, finish } = require('./common');

const host = env('UMBRA_HOST');
const port = Number(env('UMBRA_PORT'));
const thing = env('UMBRA_THING');
const WAIT = 15000;

async function expectReject(step, p) {
  try {
    const r = await p;
    fail(step, new Error('accepted, want rejected: ' + JSON.stringify(r)));
  } catch (err) {
    if (!err.modeledError) fail(step, err);
    const m = err.modeledError;
    return { code: m.code, message: m.message, clientToken: m.clientToken, executionState: m.executionState };
  }
}

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
    connectProperties: { clientId: thing, keepAliveIntervalSeconds: 60 },
    retryJitterMode: mqtt5.RetryJitterType.None,
    minReconnectDelayMs: 100,
    maxReconnectDelayMs: 1000,
  });
  const connected = waitFor(client, 'connectionSuccess', null, WAIT, 'CONNACK');
  client.on('connectionFailure', (e) => emit('connection-failure', { error: String(e.error) }));
  client.start();
  const conn = await connected;
  emit('connected', { reasonCode: conn.connack.reasonCode });

  const jobs = iotjobs.IotJobsClientv2.newFromMqtt5(client, {
    maxRequestResponseSubscriptions: 6,
    maxStreamingSubscriptions: 4,
    operationTimeoutInSeconds: 10,
  });
  const nextChanges = await openStream(jobs.createNextJobExecutionChangedStream({ thingName: thing }), 'notify-next');
  const listChanges = await openStream(jobs.createJobExecutionsChangedStream({ thingName: thing }), 'notify');
  emit('streams-open');

  // The Go test creates two job documents for this thing, then says go.
  await nextLine();
  const first = await nextChanges.next((m) => m.execution, WAIT, 'notify-next with an execution');
  emit('notify-next', { jobId: first.execution.jobId, status: first.execution.status, jobDocument: first.execution.jobDocument });
  const list = await listChanges.next((m) => m.jobs && m.jobs.QUEUED && m.jobs.QUEUED.length === 2, WAIT, 'notify listing two queued jobs');
  emit('notify', { queued: list.jobs.QUEUED.map((j) => j.jobId) });

  // Get pending.
  let r = await jobs.getPendingJobExecutions({ thingName: thing });
  emit('get-pending', {
    inProgress: r.inProgressJobs.map((j) => j.jobId), queued: r.queuedJobs.map((j) => j.jobId),
    hasToken: typeof r.clientToken === 'string' && r.clientToken.length > 0, timestamp: r.timestamp,
  });

  // Start next, with progress and a step timer.
  r = await jobs.startNextPendingJobExecution({ thingName: thing, statusDetails: { step: 'download', progress: '0' }, stepTimeoutInMinutes: 10 });
  const job = r.execution.jobId;
  emit('start-next', { jobId: job, status: r.execution.status, versionNumber: r.execution.versionNumber,
    statusDetails: r.execution.statusDetails, jobDocument: r.execution.jobDocument });

  // Progress, then an update with a stale expectedVersion.
  r = await jobs.updateJobExecution({ thingName: thing, jobId: job, status: 'IN_PROGRESS',
    statusDetails: { step: 'download', progress: '50' }, expectedVersion: 2, includeJobExecutionState: true });
  emit('progress', { executionState: r.executionState });
  emit('version-conflict', await expectReject('version-conflict', jobs.updateJobExecution({
    thingName: thing, jobId: job, status: 'SUCCEEDED', expectedVersion: 2 })));

  // Describe it.
  r = await jobs.describeJobExecution({ thingName: thing, jobId: job });
  emit('describe', { status: r.execution.status, versionNumber: r.execution.versionNumber, statusDetails: r.execution.statusDetails });

  // Complete it: notify-next names the other job.
  r = await jobs.updateJobExecution({ thingName: thing, jobId: job, status: 'SUCCEEDED',
    statusDetails: { step: 'done', progress: '100' }, expectedVersion: 3, includeJobExecutionState: true, includeJobDocument: true });
  emit('succeeded', { executionState: r.executionState, jobDocument: r.jobDocument });
  const after = await nextChanges.next((m) => m.execution && m.execution.jobId !== job, WAIT, 'notify-next after completion');
  emit('notify-next-after', { jobId: after.execution.jobId, status: after.execution.status });

  // A rejected update: the finished job cannot go back to IN_PROGRESS.
  emit('rejected-update', await expectReject('rejected-update', jobs.updateJobExecution({
    thingName: thing, jobId: job, status: 'IN_PROGRESS' })));
  // Another: an unknown job.
  emit('unknown-job', await expectReject('unknown-job', jobs.updateJobExecution({
    thingName: thing, jobId: 'no-such-job', status: 'SUCCEEDED' })));

  // The second job: the device fails it with a reason.
  r = await jobs.startNextPendingJobExecution({ thingName: thing });
  const second = r.execution.jobId;
  r = await jobs.updateJobExecution({ thingName: thing, jobId: second, status: 'FAILED',
    statusDetails: { reason: 'checksum-mismatch' }, includeJobExecutionState: true });
  emit('failed', { jobId: second, executionState: r.executionState });
  const empty = await nextChanges.next((m) => !m.execution, WAIT, 'notify-next without an execution');
  emit('notify-next-empty', { timestamp: empty.timestamp });

  jobs.close();
  client.stop();
  finish();
}

main().catch((err) => fail('main', err));
