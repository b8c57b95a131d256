// Package awsjobs is the AWS IoT Jobs device MQTT API: job executions
// (one per thing and job), their state machine, and the request/reply
// protocol on $aws/things/{thing}/jobs/... (get, start-next, {jobId}/get,
// {jobId}/update, with /accepted and /rejected replies, and the notify and
// notify-next pushes), wire-compatible with AWS IoT Jobs as documented in
// the developer guide (jobs-mqtt-api, jobs-mqtt-https-api).
//
// The control plane (which jobs exist, their documents, targets, rate and
// cancel) is Umbra's bulk jobs and rollouts (package rollout): a job whose
// spec carries a document, or a rollout delivered through a job document,
// queues executions here with Queue; this package never picks targets.
//
// Storage (bbolt through registry.Store): bucket job_executions holds
// thing 0x00 jobId → Execution (JSON), job_execution_index holds
// jobId 0x00 thing → "" for per-job listings, job_documents holds
// jobId → the job document. Every change is committed before its reply and
// before its notifications are published, as shadows are.
//
// A job document may refer to a firmware artifact with ${umbra:artifact.url},
// .sha256, .size, .version and .signature placeholders: every document a
// device receives (start-next, {jobId}/get, update with includeJobDocument,
// notify-next) has them replaced by its own values (Config.Artifact), the
// download URL minted at that moment; see RenderDocument.
//
// Choices where AWS leaves room:
//   - Timestamps on the MQTT API (timestamp, queuedAt, startedAt,
//     lastUpdatedAt) are epoch seconds, as the developer guide states for
//     the data plane ("The time in seconds since the epoch").
//   - Every accepted change made by the device (start-next of a QUEUED
//     execution, every update) and by the service (cancel, time-out)
//     increments versionNumber; a new execution has version 1 and
//     executionNumber 1 (Umbra does not retry executions).
//   - Updating an execution the service ended (CANCELED, REMOVED) is
//     rejected with TerminalStateReached; updating one the device ended
//     (SUCCEEDED, FAILED, REJECTED) or that timed out is rejected with
//     InvalidStateTransition. Both carry executionState. Describing a
//     terminal execution by its id is accepted.
//   - A device may move a QUEUED execution straight to a terminal status
//     (e.g. REJECTED without starting it).
//   - stepTimeoutInMinutes is 1..10080, or -1 to clear the step timer;
//     anything else is InvalidRequest. An expired step timer moves the
//     execution to TIMED_OUT (checked by Step).
//   - statusDetails keys are 1-128 characters of [a-zA-Z0-9:_-], values
//     1-1024 characters without control characters; a given statusDetails
//     replaces the stored one, an absent one leaves it unchanged.
//   - notify is published when an execution is queued, starts
//     (QUEUED→IN_PROGRESS) or ends; notify-next when the head of the pending
//     list (IN_PROGRESS first, then QUEUED, each by queue time) changes,
//     without "execution" when nothing is pending any more.
//   - A request on a topic in the jobs namespace that maps to no operation
//     is answered on that topic + "/rejected" with InvalidTopic.
package awsjobs
