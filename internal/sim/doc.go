// Package sim is Umbra's fleet simulator: virtual ESP32 devices that run the
// seed chapter's firmware loop against a real broker over MQTT (paho), so a
// rollout, a bulk configuration change or a server size can be tried on
// thousands of devices before touching real ones.
//
// Each device (see device.go) is one MQTT client whose client id is its thing
// name. It subscribes to $aws/things/{id}/shadow/update/delta (QoS 1) and
// .../get/accepted, reports its state on boot (led_is_on, firmware_version,
// telemetry_interval_s, self-reported location and hardware_rev,
// reset_reason, boot_count, crash_count), acts on a delta and reports what
// it did, asks /get after its boot report and after a reconnect (so desired
// state set while it was off is acted on), and publishes
// telemetry on things/{id}/telemetry every telemetry_interval_s. It performs
// an OTA update when desired ota_url + target_version name a version other
// than its own (download progress in reported state, reboot, new
// firmware_version, ota_status succeeded or failed). In low-power mode it
// wakes on a schedule, connects, fetches its shadow, acts, reports and
// disconnects again.
//
// Fault injection (Fault) rehearses bad rollouts: updates that fail on a
// fraction of the devices that match a version and tags, crash loops after an
// update, devices that never come back, slow devices, and old firmware that
// ignores desired keys it does not know (Config.Features), whose delta
// therefore never clears. Which device a fault hits is a deterministic
// function of the device id and Config.Seed, so runs are repeatable.
//
// Tags (deployment_ring, hardware_rev, location, customer_id) are derived
// from a hash of the id, so the same id always lands in the same ring
// (Config.Rings; by default ~1% canary, ~10% early_adopters, the rest
// general); a Registrar (HTTPRegistry: Umbra's admin API) puts them in the
// device registry, creating the thing type when it is missing.
//
// What a real device keeps across power cycles (the firmware it boots,
// boot and crash counters, settings it acted on, a failed update, being
// bricked) is kept in Config.StateFile (see DeviceState), so stopping and
// starting a simulation is a power cycle of the same fleet, not a new one.
// It is not read back from the device's reported shadow: a real device
// knows its firmware from the partition it booted.
//
// The user-facing description (flags, fault syntax, rings, OTA behaviour,
// the state file) is the README's "The fleet simulator" section.
package sim
