package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fill writes n shadows to a new database in dir and closes it.
func fill(t *testing.T, dir string, n int) {
	t.Helper()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		err := db.CommitShadow(context.Background(), ShadowWrite{
			Key: ShadowKey{Thing: fmt.Sprintf("thing-%05d", i)}, Doc: bytes.Repeat([]byte("d"), 200), Version: 1, Time: time.Now(),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// CorruptPage overwrites one page of the database file at path that holds
// the shadows bucket's root (a branch page once the bucket spans pages).
func CorruptPage(t testing.TB, path string) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var pgid uint64
	var pageSize int
	_ = b.View(func(tx *bolt.Tx) error {
		pgid = uint64(tx.Bucket(bucketShadows).Root())
		pageSize = tx.DB().Info().PageSize
		return nil
	})
	_ = b.Close()
	if pgid == 0 {
		t.Fatal("shadows bucket is inline: write more")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	garbage := bytes.Repeat([]byte{0xA5, 0x13, 0xFF, 0x00}, pageSize/4)
	if _, err := f.WriteAt(garbage, int64(pgid)*int64(pageSize)); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCorruptPageIsAnErrorNotAPanic(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 300)
	path := filepath.Join(dir, FileName)
	CorruptPage(t, path)
	db, openErr := Open(dir, Options{})
	if openErr == nil {
		_ = db.Close()
		t.Fatal("opened a corrupt file")
	}
	if !errors.Is(openErr, ErrCorrupt) || !strings.Contains(openErr.Error(), path) || !strings.Contains(openErr.Error(), "umbra db check") {
		t.Fatalf("error %q: want ErrCorrupt naming %s and the recovery commands", openErr, path)
	}
	rep, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatalf("check found nothing wrong in a corrupt file: %+v", rep)
	}
	t.Logf("open: %v\ncheck: %q", openErr, rep.Problems)
}

func TestOpenEmptyFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrEmptyFile) || !strings.Contains(err.Error(), "remove the file") {
		t.Fatalf("err = %v, want ErrEmptyFile with advice", err)
	}
}

func TestCheckBackupCompact(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 300)
	path := filepath.Join(dir, FileName)
	rep, err := Check(path)
	if err != nil || !rep.OK() {
		t.Fatalf("check of a sound file: %+v %v", rep, err)
	}
	if rep.Buckets["shadows"] != 300 || rep.Schema != schemaVersion {
		t.Fatalf("report %+v", rep)
	}
	out := filepath.Join(t.TempDir(), "backup.db")
	if _, err := BackupFile(path, out); err != nil {
		t.Fatal(err)
	}
	if _, err := BackupFile(path, out); err == nil {
		t.Fatal("backup overwrote an existing file")
	}
	if rep, err := Check(out); err != nil || !rep.OK() || rep.Buckets["shadows"] != 300 {
		t.Fatalf("backup: %+v %v", rep, err)
	}
	compacted := filepath.Join(t.TempDir(), "compact.db")
	before, after, err := Compact(path, compacted)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := Check(compacted); err != nil || !rep.OK() || rep.Buckets["shadows"] != 300 {
		t.Fatalf("compacted: %+v %v", rep, err)
	}
	t.Logf("compact: %d -> %d bytes", before, after)

	// While the database is open, the offline commands refuse with ErrLocked
	// and the online backup works.
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Check(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("check of an open file: %v", err)
	}
	var buf bytes.Buffer
	if n, err := db.Backup(&buf); err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("online backup: %d %v", n, err)
	}
}

func TestSalvageCopiesWhatIsReadable(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 300)
	path := filepath.Join(dir, FileName)
	CorruptPage(t, path)
	out := filepath.Join(t.TempDir(), "salvaged.db")
	rep, err := Salvage(path, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Lost) == 0 {
		t.Fatalf("nothing reported lost from a corrupt file: %+v", rep)
	}
	chk, err := Check(out)
	if err != nil || !chk.OK() {
		t.Fatalf("salvaged file: %+v %v", chk, err)
	}
	t.Logf("salvage: copied %v, lost %q", rep.Copied, rep.Lost)
}
