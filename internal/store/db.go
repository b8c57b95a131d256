package store

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the database file inside the data directory.
const FileName = "umbra.db"

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("store: database is locked by another process")

// ErrClosed is returned for writes after Close.
var ErrClosed = errors.New("store: closed")

// Options tunes the store. The zero value is ready to use.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process.
	// Zero means one second.
	LockTimeout time.Duration
	// MaxBatch caps how many writes one transaction carries. Zero means 4096.
	MaxBatch int
	// StageLinger is how long the committer waits, when it has only staged
	// writes, before writing them. It widens the crash window of staged
	// state by as much. Zero writes at once.
	StageLinger time.Duration
	// NoSync skips fsync. Only for benchmarks that measure the cost of
	// durability; never set it in production.
	NoSync bool
	// OnCommit, when set, is called after every transaction with its
	// duration (including fsync) and the number of writes it carried.
	OnCommit func(d time.Duration, writes int)
	// OnCommitError, when set, is called from the committer when a whole
	// transaction fails (disk full, I/O error), with its error.
	OnCommitError func(err error)
	// CommitFault, when set, runs at the start of every write transaction;
	// an error fails the transaction as a disk error would. A test seam.
	CommitFault func() error
	// Logger receives the store's warnings; nil discards them.
	Logger *slog.Logger
}

func (o Options) logEncode(k stageKey, err error) {
	if o.Logger != nil {
		o.Logger.Error("store: dropping a staged value that does not encode", "bucket", k.bucket, "key", k.key, "error", err)
	}
}

// DB is the open database and its committer.
type DB struct {
	bolt *bolt.DB
	opts Options
	path string

	reqs chan *commitReq
	kick chan struct{} // wakes the committer when stages arrive

	// closeMu orders Close against senders on reqs: senders hold it for
	// reading while they send, Close takes it for writing before closing reqs.
	closeMu sync.RWMutex
	closed  bool

	stageMu sync.Mutex
	staged  map[stageKey]encoding.BinaryMarshaler // nil value = delete
	prefixD []stageKey                            // prefix deletes, applied before staged
	flushes []chan error                          // Flush callers waiting for the next transaction

	done chan struct{}

	// trimAt is where the committer's history trimming goes on (committer
	// goroutine only; nil: the start of the log).
	trimAt []byte

	// unsafeOneSync (benchmarks only, with bbolt's NoSync) replaces bbolt's
	// two fdatasyncs per commit by one after it: not crash safe.
	unsafeOneSync bool
}

// Open opens (creating if needed) the database in dir and starts the committer.
// A damaged file gives an error wrapping ErrCorrupt that names the file and
// the recovery commands (never a panic); a file of 0 bytes gives ErrEmptyFile.
func Open(dir string, opts Options) (db *DB, err error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 4096
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	if err := preflight(path, opts.LockTimeout); err != nil {
		return nil, err
	}
	// bbolt panics (or faults) on some damaged pages while it opens the
	// file and rebuilds the free list; report that as a corrupt file.
	var b *bolt.DB
	defer func() { // runs after guard: a panic has become err
		if err != nil && db == nil && b != nil {
			_ = b.Close()
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(path, &err)
	b, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
		// The freelist is rebuilt by a scan at open instead of being
		// written with every commit: cheaper commits, as etcd runs bbolt.
		NoFreelistSync: true,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
		return nil, corruptError(path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// Write only when there is something to create: a transaction at
	// every open would change the transaction id that the registry's index
	// snapshot is checked against (registry.Config.SnapshotPath).
	ready := false
	if err := b.View(func(tx *bolt.Tx) error { ready = initialised(tx); return nil }); err != nil {
		return nil, fmt.Errorf("store: initialise %s: %w", path, err)
	}
	if !ready {
		err = b.Update(initialise)
	}
	if err != nil {
		return nil, fmt.Errorf("store: initialise %s: %w", path, err) // the deferred func closes b
	}
	db = &DB{
		bolt:   b,
		opts:   opts,
		path:   path,
		reqs:   make(chan *commitReq, opts.MaxBatch),
		kick:   make(chan struct{}, 1),
		staged: make(map[stageKey]encoding.BinaryMarshaler),
		done:   make(chan struct{}),
	}
	go db.run()
	return db, nil
}

// PagesWritten is how many pages this process's write transactions have
// written to the file (bbolt's page writes, meta pages included).
func (db *DB) PagesWritten() int64 {
	st := db.bolt.Stats()
	return st.TxStats.GetWrite()
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// View runs fn in a read-only transaction. It sees every write whose Commit
// has returned, and staged writes once their transaction has run.
func (db *DB) View(fn func(tx *bolt.Tx) error) error { return db.bolt.View(fn) }

// Size is the database file size in bytes.
func (db *DB) Size() int64 {
	var n int64
	_ = db.bolt.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Close writes everything staged, stops the committer and closes the file.
// It is safe to call more than once.
func (db *DB) Close() error {
	db.closeMu.Lock()
	if db.closed {
		db.closeMu.Unlock()
		<-db.done
		return nil
	}
	db.closed = true
	close(db.reqs)
	db.closeMu.Unlock()
	<-db.done
	if err := db.syncFreelist(); err != nil && db.opts.Logger != nil {
		// Only the next Open is slower: it rebuilds the free list.
		db.opts.Logger.Warn("store: free list not written at close", "error", err)
	}
	return db.bolt.Close()
}

// keyCleanClose (in the meta bucket) is the transaction id of the data a
// clean Close left and the id of Close's own transaction, which wrote it.
var keyCleanClose = []byte("clean_close_txid")

// syncFreelist ends a clean Close with one transaction that writes bbolt's
// free list (commits leave it out, NoFreelistSync): the next Open reads it
// instead of walking every page of the file to rebuild it (0.4 s and the
// whole file in memory at 1.3 GB). It records the transaction id of the
// data it closes on, so that TxID still names that state (the registry's
// index snapshot is checked against it).
func (db *DB) syncFreelist() error {
	var data uint64
	if err := db.bolt.View(func(tx *bolt.Tx) error { data = txID(tx); return nil }); err != nil {
		return err
	}
	db.bolt.NoFreelistSync = false
	return db.bolt.Update(func(tx *bolt.Tx) error {
		v := binary.BigEndian.AppendUint64(nil, data)
		return tx.Bucket(bucketMeta).Put(keyCleanClose, binary.BigEndian.AppendUint64(v, uint64(tx.ID())))
	})
}

// txID is the id of the last transaction that changed data: bbolt's
// transaction id, except right after a clean Close, whose own transaction
// (free list and this record only) does not count.
func txID(tx *bolt.Tx) uint64 {
	id := uint64(tx.ID())
	if v := tx.Bucket(bucketMeta).Get(keyCleanClose); len(v) == 16 && binary.BigEndian.Uint64(v[8:]) == id {
		return binary.BigEndian.Uint64(v)
	}
	return id
}

// initialise creates the buckets and records or checks the schema.
func initialise(tx *bolt.Tx) error {
	for _, name := range slices.Concat(allBuckets, laterBuckets) {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return migrate(tx)
}

// initialised reports whether initialise would change nothing: every
// bucket exists and the schema record is one this code reads.
func initialised(tx *bolt.Tx) bool {
	for _, name := range slices.Concat(allBuckets, laterBuckets) {
		if tx.Bucket(name) == nil {
			return false
		}
	}
	v := tx.Bucket(bucketMeta).Get(keySchema)
	return len(v) == 8 && binary.BigEndian.Uint64(v) <= schemaVersion
}
