package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DeviceState is what one simulated device keeps across power cycles, as a
// real ESP32 keeps it in flash (the firmware image) and NVS (counters and
// settings). It is not read back from the device's shadow: a real device
// knows its firmware from the partition it booted, not from the cloud.
type DeviceState struct {
	Firmware string `json:"firmware_version"`
	// OTAInstalled: Firmware came from an OTA update (not the fleet's
	// initial --firmware); crash-loop rules apply to such devices only.
	OTAInstalled bool `json:"ota_installed,omitempty"`
	BootCount    int  `json:"boot_count"`
	CrashCount   int  `json:"crash_count,omitempty"`
	LED          bool `json:"led_is_on,omitempty"`
	// TelemetryInterval is telemetry_interval_s as last set through
	// desired state (absent: the fleet's default).
	TelemetryInterval json.RawMessage `json:"telemetry_interval_s,omitempty"`
	// Settings are the feature keys the device acted on.
	Settings map[string]json.RawMessage `json:"settings,omitempty"`
	OTAURL   string                     `json:"ota_url,omitempty"`
	// OTAFailed is a version whose update failed here (not retried).
	OTAFailed string `json:"ota_failed_version,omitempty"`
	// OTAUnreported: the device installed Firmware and has not reported
	// the success yet (it does at its next boot).
	OTAUnreported bool `json:"ota_unreported,omitempty"`
	// Bricked: the device never came back from an update (never-return);
	// it stays silent.
	Bricked bool `json:"bricked,omitempty"`
}

// stateFileVersion is the format version of the state file.
const stateFileVersion = 1

type stateDoc struct {
	Version int                    `json:"version"`
	SavedAt time.Time              `json:"savedAt"`
	Devices map[string]DeviceState `json:"devices"`
}

// stateStore is the fleet's state file: every device's DeviceState, the
// ones of devices outside this fleet included, written when dirty.
type stateStore struct {
	path string

	mu      sync.Mutex
	devices map[string]DeviceState
	dirty   bool
	err     error // last write error
	writeMu sync.Mutex
}

// openState reads the state file at path (missing: empty). With reset
// its content is ignored.
func openState(path string, reset bool) (*stateStore, error) {
	s := &stateStore{path: path, devices: map[string]DeviceState{}}
	if reset {
		s.dirty = true
		return s, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("state file %s is not a simulator state file (%v); remove it or start with a reset state", path, err)
	}
	if doc.Version != stateFileVersion {
		return nil, fmt.Errorf("state file %s has format version %d, this simulator reads %d", path, doc.Version, stateFileVersion)
	}
	if doc.Devices != nil {
		s.devices = doc.Devices
	}
	return s, nil
}

func (s *stateStore) get(id string) (DeviceState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.devices[id]
	return st, ok
}

func (s *stateStore) put(id string, st DeviceState) {
	s.mu.Lock()
	s.devices[id] = st
	s.dirty = true
	s.mu.Unlock()
}

// flush writes the file if something changed since the last write:
// a temporary file in the same directory, synced, then renamed over it.
func (s *stateStore) flush() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(stateDoc{Version: stateFileVersion, SavedAt: time.Now().UTC(), Devices: s.devices})
	s.dirty = false
	s.mu.Unlock()
	if err == nil {
		err = writeFileAtomic(s.path, b)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true // try again next time
		s.err = err
		s.mu.Unlock()
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: no such file
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadState reads a simulator state file: each device's kept state by
// thing name (for tools and tests).
func ReadState(path string) (map[string]DeviceState, error) {
	s, err := openState(path, false)
	if err != nil {
		return nil, err
	}
	return s.devices, nil
}
