package broker

import (
	"net/http"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/internal/api"
)

// BackupPath is the admin API path that streams a consistent copy of the
// database (`umbra db backup --online`).
const BackupPath = "/api/admin/backup"

// serveBackup streams the database from one read transaction (bbolt's
// tx.WriteTo): a consistent snapshot while writes go on. Admin role.
func (b *Broker) serveBackup(w http.ResponseWriter, r *http.Request) error {
	// A large file takes longer than any write timeout set for the API.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	started := false
	err := b.db.View(func(tx *bolt.Tx) error {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(tx.Size(), 10))
		w.Header().Set("Content-Disposition", `attachment; filename="umbra-backup.db"`)
		started = true
		_, err := tx.WriteTo(w)
		return err
	})
	if err != nil {
		b.log.Warn("online backup failed", "remote", r.RemoteAddr, "error", err)
		if !started {
			return api.Errorf(http.StatusInternalServerError, "", "backup failed")
		}
		return nil // the copy was cut short; the client sees a short body
	}
	b.log.Info("online backup sent", "remote", r.RemoteAddr)
	return nil
}
