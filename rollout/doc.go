// Package rollout changes many devices safely: bulk configuration jobs and
// health-gated phased rollouts (canary → early adopters → waves → all).
//
// Both act only through the shadow service (every change is a versioned,
// durable, audited shadow update that reaches offline devices when they
// return) and target devices with the fleet query language.
//
// The engine is a state machine advanced by Step(now): timers (device
// timeouts, bake times, rate limits) are deadlines stored with the rollout,
// so a broker restart resumes exactly where it was, and tests drive time
// with a fake clock.
//
// # Rollouts
//
// A rollout writes a desired patch (e.g. {"ota_url":…,"target_version":"1.1"})
// wave by wave. Waves are planned when the rollout starts, deterministically
// (a stable hash of rollout id and thing name orders the targets): a wave
// takes the remaining targets matching its query, or a percentage of the
// remaining targets. Preview runs the same planner without starting.
//
// A notified device succeeds when it matches the success condition
// (default: shadow.reported.firmware_version equals the patch's
// target_version), fails when it matches the failure condition, when its
// health breaks (offline longer than the wave's offline window, the error
// condition matches, or a watched counter such as crash_count increased
// since it was notified), or times out. A wave is judged once MinFinished
// devices finished: more than FailureThreshold % failed halts the rollout
// (and, with OnFailure "rollback", restores on every touched device the
// desired values it had before); all finished with at least
// SuccessThreshold % succeeded passes the wave, which then bakes for
// BakeTime (failures during the bake still halt) and, if it requires
// approval, waits for it.
//
// Devices that match the target after the rollout started are not added
// (the plan is frozen at start, as the preview showed); start a new rollout
// for them.
//
// Every transition is an event kept with the rollout and published on
// $umbra/rollouts/{id}/events.
package rollout
