package broker_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/umbra-iot/umbra/internal/store"
)

// The online backup is an admin operation: with auth on, no key gets 401,
// viewer and operator keys 403, the admin key the file, which checks sound.
func TestOnlineBackupNeedsAdmin(t *testing.T) {
	s := startSecured(t)
	s.api(t, "", "GET", "/api/admin/backup", "", 401)
	s.api(t, s.viewer, "GET", "/api/admin/backup", "", 403)
	s.api(t, s.operator, "GET", "/api/admin/backup", "", 403)
	body := s.api(t, s.admin, "GET", "/api/admin/backup", "", 200)
	out := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(out, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := store.Check(out)
	if err != nil || !rep.OK() || rep.Schema == 0 {
		t.Fatalf("backup: %+v %v", rep, err)
	}
}
