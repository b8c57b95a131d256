package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
)

// Each client's last connects and disconnects are kept, so that a thing's
// connectivity can be read as a timeline (a flapping device shows as one)
// rather than only its latest state. They live in a ring of
// ConnHistorySlots records per client: transition n (a connect is 2v-2 and
// its disconnect 2v-1, v being the connect count) overwrites slot n mod the
// ring's size, so the history stays bounded with no deletes, and is written
// behind like the connectivity record itself.

// ConnHistorySlots is how many connects and disconnects are kept per client.
const ConnHistorySlots = 16

const bucketConnHistory = "reg_conn_history" // client 0x00 slot(2 digits) → Transition

// Transition is one connect or disconnect.
type Transition struct {
	Connected       bool   `json:"connected"`
	Timestamp       int64  `json:"timestamp"` // ms
	Version         int64  `json:"versionNumber"`
	Reason          string `json:"disconnectReason,omitempty"`
	ClientAddress   string `json:"clientAddress,omitempty"`
	ProtocolVersion byte   `json:"protocolVersion,omitempty"`
}

// transition is c's latest change as a Transition.
func transition(c Connectivity) Transition {
	t := Transition{Connected: c.Connected, Timestamp: c.Timestamp, Version: c.Version}
	if c.Connected {
		t.ClientAddress, t.ProtocolVersion = c.ClientAddress, c.ProtocolVersion
	} else {
		t.Reason = c.DisconnectReason
	}
	return t
}

// slot is where t goes in its client's ring.
func (t Transition) slot() string {
	n := 2 * (t.Version - 1)
	if !t.Connected {
		n++
	}
	return fmt.Sprintf("%02d", ((n%ConnHistorySlots)+ConnHistorySlots)%ConnHistorySlots)
}

func (r *Registry) stageTransitionOf(clientID string, t Transition) {
	b, _ := json.Marshal(t)
	r.cfg.Store.StageKV(bucketConnHistory, clientID+"\x00"+t.slot(), b)
}

// ConnectivityHistory returns the client's last connects and disconnects,
// newest first (at most ConnHistorySlots). It first commits what waits to be
// written behind, so the latest change is there.
func (r *Registry) ConnectivityHistory(ctx context.Context, clientID string) ([]Transition, error) {
	if err := r.cfg.Store.Flush(ctx); err != nil {
		return nil, err
	}
	var out []Transition
	err := r.cfg.Store.ViewKV(func(kv KV) error {
		return kv.ForEach(bucketConnHistory, clientID+"\x00", func(_ string, v []byte) error {
			var t Transition
			if json.Unmarshal(v, &t) == nil {
				out = append(out, t)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Version != out[j].Version {
			return out[i].Version > out[j].Version
		}
		return !out[i].Connected // a disconnect follows its connect
	})
	return out, nil
}
