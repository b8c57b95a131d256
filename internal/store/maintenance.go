package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrCorrupt is returned by Open and the maintenance functions for a file
// that is not a readable Umbra database.
var ErrCorrupt = errors.New("store: database file is corrupt")

// ErrEmptyFile is returned by Open for a database file of 0 bytes: not a
// file Umbra wrote (a truncated copy, a full disk at creation), so starting
// on it would silently start an empty fleet.
var ErrEmptyFile = errors.New("store: database file is empty (0 bytes)")

// recovery is the advice every corruption error carries.
func recovery(path string) string {
	dir := filepath.Dir(path)
	return fmt.Sprintf("check it with `umbra db check --data-dir %s`; restore a backup (made with `umbra db backup`), "+
		"or copy out what is readable with `umbra db salvage --data-dir %s NEW-FILE`; see RELIABILITY.md, \"Recovering the database\"", dir, dir)
}

func corruptError(path string, cause any) error {
	return fmt.Errorf("%w: %s: %v; Umbra did not start; %s", ErrCorrupt, path, cause, recovery(path))
}

// guard turns a panic or memory fault of bbolt reading a damaged file, in
// the calling goroutine, into an error naming the file.
func guard(path string, err *error) {
	r := recover()
	if r == nil {
		return
	}
	*err = corruptError(path, r)
}

// checkNotEmpty refuses a database file of 0 bytes.
func checkNotEmpty(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > 0 {
		return nil // missing: created; unreadable: bbolt reports it
	}
	return fmt.Errorf("%w: %s. It is not a database Umbra wrote (a truncated copy or a disk that was full?). "+
		"Restore a backup (`umbra db backup` makes one), or remove the file to start with an empty database", ErrEmptyFile, path)
}

// openReadOnly opens the database file at path for the maintenance
// commands. It fails with ErrLocked while a broker has it open.
func openReadOnly(path string) (db *bolt.DB, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("store: no database at %s (wrong --data-dir?)", path)
	} else if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := checkNotEmpty(path); err != nil {
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(path, &err)
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (stop `umbra serve` first; a running broker is backed up online: `umbra db backup --online FILE`)", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, corruptError(path, err)
	case err != nil:
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// walk reads every page of every bucket in the calling goroutine, so that
// a damaged page panics here, where guard recovers it, and not in the
// goroutine bbolt starts to rebuild the free list when it opens the file
// for writing (Umbra does not write the free list: NoFreelistSync), where
// nothing can recover it.
func walk(tx *bolt.Tx) error {
	return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walkBucket(b) })
}

func walkBucket(b *bolt.Bucket) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue
		}
		if sub := b.Bucket(k); sub != nil {
			if err := walkBucket(sub); err != nil {
				return err
			}
		}
	}
	return nil
}

// preflight reads the whole file at path read-only before Open opens it
// for writing. A missing file is fine (Open creates it).
func preflight(path string, timeout time.Duration) (err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := checkNotEmpty(path); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var db *bolt.DB
	defer func() { // after guard
		if db != nil {
			_ = db.Close()
		}
	}()
	defer guard(path, &err)
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return corruptError(path, err)
	case err != nil:
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	return db.View(walk)
}

// CheckReport is what Check found.
type CheckReport struct {
	Path string `json:"path"`
	// Size is the file size in bytes.
	Size int64 `json:"size"`
	// Schema is the layout version recorded in the file.
	Schema uint64 `json:"schema"`
	// Buckets counts the keys of every top-level bucket.
	Buckets map[string]int `json:"buckets"`
	// Problems lists what is wrong; empty means the file is sound.
	Problems []string `json:"problems"`
}

// OK reports whether no problem was found.
func (r *CheckReport) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds the report of a badly damaged file.
const maxProblems = 100

// Check verifies the database file at path, which must not be open in a
// running broker: bbolt's own consistency check of every page (tx.Check),
// then Umbra's: its buckets exist, the schema record is one this Umbra
// reads, and every MQTT session record is well-formed.
func Check(path string) (rep *CheckReport, err error) {
	db, err := openReadOnly(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rep = &CheckReport{Path: path, Buckets: map[string]int{}}
	add := func(format string, args ...any) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			add("reading the file failed: %v", r)
			err = nil
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		rep.Size = tx.Size()
		// First a walk in this goroutine: bbolt's check rebuilds the free
		// list in a goroutine of its own, which a damaged page would crash.
		walked := func() (err error) {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%v", r)
				}
			}()
			return walk(tx)
		}()
		if walked != nil {
			add("reading the file failed: %v", walked)
			return nil
		}
		for e := range tx.Check() {
			add("%v", e)
		}
		if !rep.OK() {
			return nil // walking a damaged tree may crash; bbolt's report is the answer
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				add("bucket %q is missing", name)
			}
		}
		if m := tx.Bucket(bucketMeta); m != nil {
			switch v := m.Get(keySchema); {
			case v == nil:
				add("schema version record is missing")
			case len(v) != 8:
				add("schema version record has %d bytes, want 8", len(v))
			default:
				rep.Schema = binary.BigEndian.Uint64(v)
				if rep.Schema > schemaVersion {
					add("schema %d is newer than this Umbra understands (%d)", rep.Schema, schemaVersion)
				}
			}
		}
		sessions := [][]byte{BucketClients, BucketSubscriptions, BucketRetained, BucketInflight}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			session := slices.ContainsFunc(sessions, func(s []byte) bool { return string(s) == string(name) })
			n := 0
			err := b.ForEach(func(k, v []byte) error {
				n++
				if session && v != nil && !json.Valid(v) {
					add("bucket %s, key %q: session record is not valid JSON (the broker skips it)", name, printable(k))
				}
				return nil
			})
			rep.Buckets[string(name)] = n
			return err
		})
	})
	if err != nil {
		add("%v", err)
	}
	return rep, nil
}

func printable(k []byte) string { return strings.ReplaceAll(string(k), "\x00", "\\0") }

// Backup writes a consistent copy of the open database to w from one read
// transaction, while writes go on. It returns the bytes written.
func (db *DB) Backup(w io.Writer) (n int64, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// BackupFile copies the database file at path, which must not be open in a
// running broker, to out (written beside it and renamed into place once
// synced, so out is never a partial copy).
func BackupFile(path, out string) (int64, error) {
	db, err := openReadOnly(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return WriteFileAtomic(out, func(w io.Writer) (n int64, err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer guard(path, &err)
		err = db.View(func(tx *bolt.Tx) error {
			n, err = tx.WriteTo(w)
			return err
		})
		return n, err
	})
}

// WriteFileAtomic writes out through fill into a temporary file beside it,
// syncs it and renames it to out. out must not exist.
func WriteFileAtomic(out string, fill func(io.Writer) (int64, error)) (int64, error) {
	if _, err := os.Stat(out); err == nil {
		return 0, fmt.Errorf("%s already exists; choose a new file name", out)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	n, err := fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return 0, err
	}
	return n, nil
}

// Compact copies every bucket and key of the database file at path, which
// must not be open in a running broker, into a new file out, leaving the
// free pages behind (bbolt's compaction). It returns both sizes.
func Compact(path, out string) (before, after int64, err error) {
	src, err := openReadOnly(path)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	if _, err := os.Stat(out); err == nil {
		return 0, 0, fmt.Errorf("%s already exists; choose a new file name", out)
	}
	tmp := out + ".compacting"
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return 0, 0, err
	}
	fail := func(e error) (int64, int64, error) {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return 0, 0, e
	}
	err = func() (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer guard(path, &err)
		return bolt.Compact(dst, src, 64<<20)
	}()
	if err != nil {
		return fail(fmt.Errorf("compact %s: %w", path, err))
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, out); err != nil {
		_ = os.Remove(tmp)
		return 0, 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	fo, err := os.Stat(out)
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), fo.Size(), nil
}

// SalvageReport is what Salvage copied and what it could not read.
type SalvageReport struct {
	// Copied counts the keys copied per top-level bucket.
	Copied map[string]int `json:"copied"`
	// Lost describes each bucket (or the rest of one) that could not be read.
	Lost []string `json:"lost"`
}

// Salvage copies what can still be read from a damaged database file at
// path into a new file out: bucket by bucket, key by key, in key order. A
// bucket whose pages are damaged is copied up to the damage; the rest of it
// is reported in Lost. The result is a sound file (Check it) with possibly
// less data: restore a backup instead when there is one.
func Salvage(path, out string) (*SalvageReport, error) {
	src, err := openReadOnly(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if _, err := os.Stat(out); err == nil {
		return nil, fmt.Errorf("%s already exists; choose a new file name", out)
	}
	tmp := out + ".salvaging"
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return nil, err
	}
	rep := &SalvageReport{Copied: map[string]int{}}
	names := salvageNames(src, rep)
	for _, name := range names {
		n, lost := salvageBucket(src, dst, name)
		rep.Copied[string(name)] = n
		if lost != "" {
			rep.Lost = append(rep.Lost, fmt.Sprintf("bucket %s: keys after the %d copied: %s", name, n, lost))
		}
	}
	err = dst.Sync()
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	return rep, nil
}

// salvageNames lists the top-level buckets, or, when the root itself cannot
// be read, Umbra's own bucket names (each is then tried on its own).
func salvageNames(src *bolt.DB, rep *SalvageReport) (names [][]byte) {
	err := func() (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		return src.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				names = append(names, bytes.Clone(name))
				return nil
			})
		})
	}()
	if err != nil {
		rep.Lost = append(rep.Lost, fmt.Sprintf("the list of buckets (%v): trying Umbra's own buckets one by one; other buckets (registry, rollouts) may be lost", err))
		return slices.Concat(allBuckets, laterBuckets)
	}
	return names
}

// salvageBucket copies one top-level bucket (and any nested ones) and
// returns how many keys it copied and, if it stopped early, why.
func salvageBucket(src, dst *bolt.DB, name []byte) (copied int, lost string) {
	const batch = 10_000
	var after []byte // last key copied
	for {
		n, done, why := func() (n int, done bool, why string) {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					why = fmt.Sprint(r)
				}
			}()
			stx, err := src.Begin(false)
			if err != nil {
				return 0, false, err.Error()
			}
			defer func() { _ = stx.Rollback() }()
			b := stx.Bucket(name)
			if b == nil {
				return 0, true, ""
			}
			err = dst.Update(func(dtx *bolt.Tx) error {
				db, err := dtx.CreateBucketIfNotExists(name)
				if err != nil {
					return err
				}
				if err := db.SetSequence(max(db.Sequence(), b.Sequence())); err != nil {
					return err
				}
				// A panic reading src ends the loop, not the transaction:
				// what was copied before it is committed.
				defer func() {
					if r := recover(); r != nil {
						why = fmt.Sprint(r)
					}
				}()
				c := b.Cursor()
				k, v := c.First()
				if after != nil {
					k, v = c.Seek(after)
					if k != nil && bytes.Equal(k, after) {
						k, v = c.Next()
					}
				}
				for ; k != nil; k, v = c.Next() {
					if v == nil {
						if sub := b.Bucket(k); sub != nil {
							if err := copyBucket(sub, db, k); err != nil {
								return err
							}
						}
					} else if err := db.Put(bytes.Clone(k), bytes.Clone(v)); err != nil {
						return err
					}
					after = bytes.Clone(k)
					if n++; n == batch {
						return nil
					}
				}
				done = true
				return nil
			})
			if err != nil {
				return n, false, err.Error()
			}
			return n, done, why
		}()
		copied += n
		if why != "" {
			return copied, why
		}
		if done {
			return copied, ""
		}
	}
}

func copyBucket(src *bolt.Bucket, parent *bolt.Bucket, name []byte) error {
	dst, err := parent.CreateBucketIfNotExists(bytes.Clone(name))
	if err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := src.Bucket(k); sub != nil {
				return copyBucket(sub, dst, k)
			}
			return nil
		}
		return dst.Put(bytes.Clone(k), bytes.Clone(v))
	})
}
