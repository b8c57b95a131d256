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
// wave by wave. Waves are planned deterministically: a stable hash of a
// seed and the thing name orders the targets; a wave takes the remaining
// targets matching its query, or a percentage (rounded up) of the remaining
// targets. The plan is frozen when the rollout starts.
//
// # Preview = plan
//
// Preview plans a spec against the fleet as it is now with a fresh seed
// and returns the waves and a plan token {seed, fingerprint, counts}. A
// spec carrying that token (field "plan") is planned with the same seed,
// so create/start freeze exactly the previewed membership; if the fleet
// changed so that the plan differs (fingerprint of every wave's sorted
// members), create and start refuse with ErrPlanChanged (HTTP 409, field
// "plan") naming the wave sizes before and now. Without a token the seed
// is the rollout id (the plan shown by GET /api/rollouts/{id}/preview).
//
// # Empty is an error
//
// Create and start refuse (FieldError, HTTP 400) a target that matches no
// device and a wave that selects none, unless the spec sets allowEmpty.
//
// # Device states and health
//
// pending → notified (desired written) → in_progress (the device answered)
// → succeeded | failed | timed_out; a succeeded device can become
// regressed; at rollback every notified device becomes rolled_back
// (keeping the state it had in "before"); devices never notified become
// skipped when the rollout halts, is cancelled or rolled back.
//
// Health is evaluated for every device the rollout touched, in every
// started wave, until the rollout ends: while the wave runs, during its
// bake, while it waits for approval or is paused, and while later waves
// run. On each step, for each notified, in-progress or succeeded device
// whose shadow changed (every device after a restart), the engine reads
// the device's shadow once and judges every gate below on that one
// version: the conditions are matched against the document it read (the
// thing's attributes, other shadows and connectivity come from the fleet
// index), never against an index that may not have applied that version
// yet. So the update's reboot, reported with the new firmware_version, is
// never seen without it:
//
//   - success condition (default shadow.reported.firmware_version equals
//     the patch's target_version) matches a device not yet succeeded: it
//     succeeds, and the watched counters (health.increaseOf) are read again
//     as its new baseline, since the update's own reboot raises counters such
//     as boot_count;
//   - failure condition matches: failed (regressed if it had succeeded);
//   - health.errorCondition matches: failed / regressed;
//   - a health.increaseOf counter is above its baseline (the value at
//     notification, then at success): failed / regressed;
//   - a succeeded device no longer matches the success condition (it went
//     back to other firmware): regressed;
//   - offline longer than health.offlineWindow since the later of its
//     disconnection and its notification (or success): failed / regressed;
//   - not succeeded within the wave's deviceTimeout (default 1 h) after
//     notification: timed_out.
//
// Each failure records the gate (successCondition, failureCondition,
// health.errorCondition, health.increaseOf, health.offlineWindow,
// deviceTimeout, notify), the reported value(s) it saw (e.g.
// "reset_reason=panic", "boot_count=4") and the engine time. A regressed
// device counts as failed for its wave. Known limit: a counter rise that
// happens between a device's success report and the engine's next step
// (one RolloutInterval, 1 s by default) is absorbed into the new baseline;
// the next rise is caught.
//
// A wave is judged once MinFinished devices finished: more than
// FailureThreshold % of its finished devices failed halts the rollout —
// checked for the current wave and every earlier one on every step, so a
// canary that regresses while a later wave runs halts it too. All devices
// finished with at least SuccessThreshold % succeeded passes the wave,
// which then bakes for BakeTime (a regression during the bake halts) and,
// if it requires approval, waits for it. With OnFailure "rollback" a halt
// rolls back.
//
// After the rollout ends, devices whose update was still under way are
// still followed (succeeded or failed as they report), so counts stay
// true; nothing is halted or written any more.
//
// # Rollback
//
// At notification the engine records, per device and per patched key, the
// desired value the patch overwrote, or null when the key was absent.
// Rollback writes exactly those back (null removes the key again); it
// never writes a reported value. Rollback only changes desired state: a
// device that installed the new firmware keeps it, and the rollout's
// notice says how many run it. To actually downgrade, give rollbackPatch
// (e.g. {"target_version":"1.0.0","ota_url":"…/1.0.0.bin"}): it is written
// over the restored values on every touched device.
//
// # OTA progress
//
// Each device's update progress is read from its reported state, the
// seed's firmware loop keys: reported.ota_status (downloading, installing,
// rebooting, succeeded, failed), reported.ota_progress (0-100) and
// reported.ota_error (the reason, when failed). It is shown per device
// (GET /api/rollouts/{id}/devices "ota", umbra rollout status --devices,
// the dashboard's rollout view).
//
// # Status
//
// Each wave has a badge (pending, running, baking, waiting_approval,
// paused, passed, failed, halted, cancelled, rolled_back, not_reached) and
// counts by device state, plus "installed": devices that matched the
// success condition when last seen. Totals sum the waves.
//
// Devices that match the target after the rollout started are not added
// (the plan is frozen at start, as the preview showed); start a new rollout
// for them.
//
// Every transition is an event kept with the rollout and published on
// $umbra/rollouts/{id}/events.
package rollout
