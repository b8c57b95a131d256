package sim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
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
//     done at once: SUCCEEDED;
//   - a job document that also carries the image's http(s) "url" and
//     "sha256" (in "firmware" or at the top level, with "size" and
//     "signature" when known: what a rollout or job that names an artifact
//     delivers with ${umbra:artifact.*} placeholders) is downloaded for
//     real, as with --download: Range requests resume a dropped
//     connection, IN_PROGRESS progress is the percent of bytes received at
//     each quarter, and only an image whose size, SHA-256 (and signature,
//     with the signing key) verify is installed; otherwise the execution
//     ends FAILED with the reason ("firmware 2.0.0: sha256 mismatch: ...").
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
		target, img := jobImage(msg.Execution.JobDocument)
		d.runJob(msg.Execution.JobID, target, img)
	}
}

// jobFirmware is what a job document may say about the firmware.
type jobFirmware struct {
	Version   string          `json:"version"`
	URL       string          `json:"url"`
	SHA256    string          `json:"sha256"`
	Size      json.RawMessage `json:"size"` // a number, or its digits in a string
	Signature string          `json:"signature"`
}

// jobImage is the firmware version a job document asks for ("" none) and
// the image to download (url "" when the document does not carry an
// http(s) url and a sha256: the download is simulated).
func jobImage(doc json.RawMessage) (string, image) {
	var v struct {
		jobFirmware
		Firmware jobFirmware `json:"firmware"`
	}
	_ = json.Unmarshal(doc, &v)
	fw := v.jobFirmware
	if v.Firmware.Version != "" || v.Firmware.URL != "" {
		fw = v.Firmware
	}
	if !isHTTP(fw.URL) || fw.SHA256 == "" {
		return fw.Version, image{}
	}
	img := image{url: fw.URL, sha256: fw.SHA256}
	size := strings.Trim(string(fw.Size), `"`)
	if n, err := strconv.ParseInt(size, 10, 64); err == nil {
		img.size = n
	}
	if b, err := base64.StdEncoding.DecodeString(fw.Signature); err == nil && len(b) > 0 {
		img.sig = b
	}
	return fw.Version, img
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
func (d *device) runJob(job, target string, img image) {
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
	if img.url != "" {
		d.downloadJob(job, target, img)
		return
	}
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
		d.installJobLocked(job, target)
	}
	d.updateJob(job, "IN_PROGRESS", map[string]string{"progress": "0", "step": "download"})
	time.AfterFunc(step, next)
}

// installJobLocked installs target and reboots; after the reboot,
// start-next returns the execution still IN_PROGRESS and the device, now
// running target, reports SUCCEEDED.
func (d *device) installJobLocked(job, target string) {
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

// failJobLocked ends a job's update FAILED with reason.
func (d *device) failJobLocked(job, target string, progress int, reason string) {
	d.job = jobState{}
	d.f.stats.otaFailed.Add(1)
	if len(reason) > 1000 { // statusDetails values are at most 1024 characters
		reason = reason[:1000]
	}
	d.updateJob(job, "FAILED", map[string]string{"progress": strconv.Itoa(progress), "reason": reason, "version": target})
}

// downloadJob downloads a job document's image for real (d.mu held), then
// verifies and installs it.
func (d *device) downloadJob(job, target string, img image) {
	d.updateJob(job, "IN_PROGRESS", map[string]string{"progress": "0", "step": "download"})
	alive := func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.job.active && d.job.id == job
	}
	go func() {
		last := 0 // the progress last reported, for a failure
		err := d.fetchVerified(img, alive, func(q int) {
			last = q
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.job.active && d.job.id == job {
				d.updateJob(job, "IN_PROGRESS", map[string]string{"progress": strconv.Itoa(q), "step": "download"})
			}
		})
		if d.f.stopped.Load() {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.job.active || d.job.id != job {
			return // aborted by a reboot
		}
		switch {
		case errors.Is(err, errAborted):
			return
		case err != nil:
			d.failJobLocked(job, target, last, "firmware "+target+": "+err.Error())
			return
		}
		d.f.stats.downloadsVerified.Add(1)
		if d.f.faultHits(FailUpdate, d.id, target) {
			d.failJobLocked(job, target, 100, "image verification failed")
			return
		}
		d.installJobLocked(job, target)
	}()
}
