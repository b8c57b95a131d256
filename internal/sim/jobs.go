package sim

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Jobs-API devices (Config.JobsAPI) take work through the AWS IoT Jobs
// device MQTT API the way AWS's device samples do:
//
//   - on notify-next with a QUEUED execution, and after every boot or
//     reconnection, they publish start-next;
//   - start-next/accepted with an execution of a job document naming a
//     firmware version ({"firmware":{"version":"2.0.0","url":...}} or a
//     top-level "version") that differs from the running firmware starts a
//     download: IN_PROGRESS updates with statusDetails progress 25/50/75;
//     a fail-update fault for that version ends it FAILED with
//     statusDetails reason "image verification failed"; otherwise the
//     device installs and reboots (crash-loop and never-return faults apply
//     as with desired-state updates), and after the reboot start-next
//     returns the same IN_PROGRESS execution: running the version, the
//     device reports SUCCEEDED;
//   - a job document without a version (or for the running version) is
//     done at once: SUCCEEDED.
//
// The shadow loop (reported state, deltas) keeps running beside it.

func (d *device) jobsTopic(suffix string) string { return "$aws/things/" + d.id + "/jobs/" + suffix }

// jobState is the Jobs-API download in progress.
type jobState struct {
	id     string
	active bool
}

func (d *device) onJobsMessage(topic string, payload []byte) {
	var msg struct {
		Execution *struct {
			JobID       string          `json:"jobId"`
			Status      string          `json:"status"`
			JobDocument json.RawMessage `json:"jobDocument"`
		} `json:"execution"`
	}
	if json.Unmarshal(payload, &msg) != nil {
		d.f.stats.badMessages.Add(1)
		return
	}
	switch {
	case strings.HasSuffix(topic, "/notify-next"):
		if msg.Execution != nil && msg.Execution.Status == "QUEUED" {
			d.mu.Lock()
			if d.cl != nil && !d.job.active {
				d.lastTok = d.cl.Publish(d.jobsTopic("start-next"), 1, false, []byte(`{"statusDetails":{"progress":"0"}}`))
			}
			d.mu.Unlock()
		}
	case strings.HasSuffix(topic, "/start-next/accepted"):
		if msg.Execution == nil {
			return
		}
		d.runJob(msg.Execution.JobID, jobVersion(msg.Execution.JobDocument))
	}
}

// jobVersion is the firmware version a job document asks for ("" none).
func jobVersion(doc json.RawMessage) string {
	var v struct {
		Version  string `json:"version"`
		Firmware struct {
			Version string `json:"version"`
		} `json:"firmware"`
	}
	_ = json.Unmarshal(doc, &v)
	if v.Firmware.Version != "" {
		return v.Firmware.Version
	}
	return v.Version
}

func (d *device) updateJob(job string, status string, details map[string]string) {
	if d.cl == nil {
		return
	}
	b, _ := json.Marshal(map[string]any{"status": status, "statusDetails": details})
	d.f.stats.reports.Add(1)
	d.lastTok = d.cl.Publish(d.jobsTopic(job+"/update"), 1, false, b)
}

// runJob runs (or finishes, after the update's reboot) an execution.
func (d *device) runJob(job, target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.job.active && d.job.id == job {
		return // already downloading it
	}
	if target == "" || target == d.fw {
		if d.job.id == job {
			d.f.stats.otaSucceeded.Add(1) // the update this device downloaded
		}
		d.job = jobState{}
		d.updateJob(job, "SUCCEEDED", map[string]string{"progress": "100", "firmware_version": d.fw})
		return
	}
	d.job = jobState{id: job, active: true}
	d.f.stats.otaStarted.Add(1)
	step := d.f.cfg.OTADuration / 4
	if d.slow > 0 {
		step *= 4
	}
	progress := 0
	var next func()
	next = func() {
		if d.f.stopped.Load() {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.job.active || d.job.id != job {
			return // aborted by a reboot
		}
		progress += 25
		if progress >= 50 && d.f.faultHits(FailUpdate, d.id, target) {
			d.job = jobState{}
			d.f.stats.otaFailed.Add(1)
			d.updateJob(job, "FAILED", map[string]string{"progress": strconv.Itoa(progress), "reason": "image verification failed", "version": target})
			return
		}
		if progress < 100 {
			d.updateJob(job, "IN_PROGRESS", map[string]string{"progress": strconv.Itoa(progress), "step": "download"})
			time.AfterFunc(step, next)
			return
		}
		d.updateJob(job, "IN_PROGRESS", map[string]string{"progress": "100", "step": "rebooting"})
		d.job.active = false // d.job.id stays: the success after the reboot is counted
		d.fw = target
		d.updated = true
		d.crashLoop = d.f.faultHits(CrashLoop, d.id, target)
		if d.f.faultHits(NeverReturn, d.id, target) {
			d.gone = true
		}
		d.persistLocked()
		d.rebootLocked("software")
	}
	d.updateJob(job, "IN_PROGRESS", map[string]string{"progress": "0", "step": "download"})
	time.AfterFunc(step, next)
}
