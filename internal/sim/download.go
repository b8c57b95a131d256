package sim

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Real downloads (Config.Download): a device whose desired ota_url is an
// http(s) URL fetches the image the way esp_https_ota does: one GET, and
// after a dropped connection a Range request for the rest (If-Range with
// the ETag, so a changed image restarts from zero); it hashes what it
// receives, checks ota_size and ota_sha256 (and ota_signature when the
// fleet has the signing key), and installs only an image that verifies.
// Progress is reported as ota_progress (percent of bytes) at each quarter.

// image is what desired state says about the image to download.
type image struct {
	url    string
	sha256 string // hex
	size   int64
	sig    []byte
}

// maxAttempts bounds the requests one download makes (first + resumes).
const maxAttempts = 8

var errAborted = errors.New("download aborted")

// downloadError is a download that cannot succeed (retrying will not help).
type downloadError struct{ msg string }

func (e *downloadError) Error() string { return e.msg }

// fetch downloads img, calling progress with the bytes received so far,
// until alive reports false; it returns the SHA-256 digest of the whole
// image.
func (d *device) fetch(img image, alive func() bool, progress func(got, total int64)) ([]byte, int64, error) {
	client := d.f.cfg.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	var (
		h     hash.Hash = sha256.New()
		got   int64
		total = img.size
		etag  string
	)
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if d.f.stopped.Load() || !alive() {
			return nil, got, errAborted
		}
		if attempt > 0 {
			d.f.stats.downloadResumes.Add(1)
			<-time.After(time.Duration(attempt) * 50 * time.Millisecond) // back off a little before resuming
		}
		req, err := http.NewRequest("GET", img.url, nil)
		if err != nil {
			return nil, got, &downloadError{fmt.Sprintf("bad ota_url: %v", err)}
		}
		if got > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", got))
			if etag != "" {
				req.Header.Set("If-Range", etag)
			}
		}
		d.f.stats.downloadRequests.Add(1)
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			if got > 0 { // the server sent the whole image again
				h.Reset()
				got = 0
			}
			if total <= 0 {
				total = resp.ContentLength
			}
		case resp.StatusCode == http.StatusPartialContent && got > 0:
			if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", got)) {
				resp.Body.Close()
				return nil, got, &downloadError{fmt.Sprintf("resumed download: Content-Range %q does not start at byte %d", resp.Header.Get("Content-Range"), got)}
			}
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			// Busy or failing for now (too many connections from one
			// address, a restart): try again, as a device would.
			resp.Body.Close()
			lastErr = fmt.Errorf("HTTP %d", resp.StatusCode)
			continue
		default:
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			msg := strings.TrimSpace(string(b))
			var doc struct{ Message string }
			if json.Unmarshal(b, &doc) == nil && doc.Message != "" {
				msg = doc.Message
			}
			return nil, got, &downloadError{fmt.Sprintf("download: HTTP %d: %s", resp.StatusCode, msg)}
		}
		if e := resp.Header.Get("ETag"); e != "" {
			etag = e
		}
		buf := make([]byte, 32<<10)
		for {
			n, rerr := resp.Body.Read(buf)
			if n > 0 {
				h.Write(buf[:n])
				got += int64(n)
				d.f.stats.downloadBytes.Add(int64(n))
				if total > 0 && got > total {
					resp.Body.Close()
					return nil, got, &downloadError{fmt.Sprintf("image larger than ota_size %d", total)}
				}
				progress(got, total)
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				lastErr = rerr
				break
			}
		}
		resp.Body.Close()
		if total > 0 && got == total || total <= 0 && lastErr == nil {
			return h.Sum(nil), got, nil
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("connection closed after %d of %d bytes", got, total)
		}
	}
	return nil, got, &downloadError{fmt.Sprintf("download failed after %d attempts (%d bytes received): %v", maxAttempts, got, lastErr)}
}

// verify checks a downloaded image against what desired state promised.
func (f *Fleet) verify(img image, digest []byte, size int64) error {
	if img.size > 0 && size != img.size {
		return fmt.Errorf("size %d, want ota_size %d", size, img.size)
	}
	if img.sha256 != "" && !strings.EqualFold(hex.EncodeToString(digest), img.sha256) {
		return fmt.Errorf("sha256 mismatch: image %s, want ota_sha256 %s", hex.EncodeToString(digest), img.sha256)
	}
	switch k := f.cfg.SigningKey.(type) {
	case nil:
	case *ecdsa.PublicKey:
		if len(img.sig) == 0 {
			return errors.New("unsigned image (no ota_signature) refused")
		}
		if !ecdsa.VerifyASN1(k, digest, img.sig) {
			return errors.New("signature does not verify")
		}
	case ed25519.PublicKey:
		if len(img.sig) == 0 {
			return errors.New("unsigned image (no ota_signature) refused")
		}
		if !ed25519.Verify(k, digest, img.sig) {
			return errors.New("signature does not verify")
		}
	}
	return nil
}

// imageOf reads the image fields of desired state (ota_sha256, ota_size,
// ota_signature) into d.ota. They are reported (so the desired converges)
// once the image runs, with target_version.
func (d *device) imageOf(state map[string]json.RawMessage) {
	if s, ok := jsonString(state["ota_sha256"]); ok {
		d.ota.sha256 = s
	}
	if v, ok := state["ota_size"]; ok {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			d.ota.size = n
		}
	}
	if s, ok := jsonString(state["ota_signature"]); ok {
		if b, err := base64.StdEncoding.DecodeString(s); err == nil {
			d.ota.sig = b
		}
	}
}

// reportImage adds the running image's fields to a report.
func (d *device) reportImage(rep map[string]any) {
	if d.ota.sha256 != "" {
		rep["ota_sha256"], rep["ota_size"] = d.ota.sha256, d.ota.size
	}
	if len(d.ota.sig) > 0 {
		rep["ota_signature"] = base64.StdEncoding.EncodeToString(d.ota.sig)
	}
}

func (d *device) otaCurrent(gen int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ota.active && d.ota.gen == gen
}

func isHTTP(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")
}

// fetchVerified downloads img (fetch, resuming while alive), calls quarter
// with 25, 50 and 75 as the download passes them, and verifies what arrived
// (size, SHA-256, signature): the firmware loop of both OTA paths.
func (d *device) fetchVerified(img image, alive func() bool, quarter func(q int)) error {
	last := 0
	digest, size, err := d.fetch(img, alive, func(got, total int64) {
		if total <= 0 {
			return
		}
		if q := int(got*100/total) / 25 * 25; q > last && q < 100 {
			last = q
			quarter(q)
		}
	})
	if err == nil {
		err = d.f.verify(img, digest, size)
	}
	return err
}

// startDownload runs a real download in the background (d.mu held).
func (d *device) startDownload(gen int, target string) {
	img := image{url: d.ota.url, sha256: d.ota.sha256, size: d.ota.size, sig: d.ota.sig}
	go func() {
		err := d.fetchVerified(img, func() bool { return d.otaCurrent(gen) }, func(q int) {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.ota.active && d.ota.gen == gen {
				d.ota.progress = q
				d.report(map[string]any{"ota_status": "downloading", "ota_progress": q})
			}
		})
		if d.f.stopped.Load() {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.ota.active || d.ota.gen != gen {
			return
		}
		if err != nil {
			if errors.Is(err, errAborted) {
				return
			}
			d.otaFailedLocked(target, "firmware "+target+": "+err.Error())
			return
		}
		d.f.stats.downloadsVerified.Add(1)
		if d.f.faultHits(FailUpdate, d.id, target) {
			d.otaFailedLocked(target, "image verification failed")
			return
		}
		d.installLocked(target)
	}()
}
