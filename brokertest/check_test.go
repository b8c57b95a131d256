package brokertest_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/store"
)

// TestCheckStoreFindsADamagedPage: the check every brokertest server runs
// after shutdown is sound on a file the broker wrote and reports a file
// with one page overwritten, so it cannot pass silently.
func TestCheckStoreFindsADamagedPage(t *testing.T) {
	srv, err := brokertest.New()
	if err != nil {
		t.Fatal(err)
	}
	dir := srv.Options.DataDir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for i := range 300 {
		body := fmt.Sprintf(`{"state":{"reported":{"pad":%q}}}`, strings.Repeat("x", 200))
		resp, err := http.Post(srv.HTTPURL()+fmt.Sprintf("/things/dev-%03d/shadow", i), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("update %d: %d", i, resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := brokertest.CheckStore(dir); err != nil {
		t.Fatalf("a sound file: %v", err)
	}
	path := filepath.Join(dir, store.FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	var pageSize int
	_ = db.View(func(tx *bolt.Tx) error {
		_ = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if r := uint64(b.Root()); r > root {
				root = r // the deepest-numbered bucket root: a real page
			}
			return nil
		})
		pageSize = tx.DB().Info().PageSize
		return nil
	})
	_ = db.Close()
	if root == 0 {
		t.Fatal("every bucket is inline: write more")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt(bytes.Repeat([]byte{0xA5, 0x13, 0xFF, 0x00}, pageSize/4), int64(root)*int64(pageSize))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := brokertest.CheckStore(dir); err == nil {
		t.Fatal("CheckStore passed a file with an overwritten page")
	} else {
		t.Logf("reported: %.200s", err)
	}
}
