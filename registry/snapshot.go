package registry

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/umbra-iot/umbra/registry/query"
)

// The index snapshot is the fleet index written to a file at shutdown
// (SaveSnapshot) and read at start instead of decoding every thing and
// parsing every shadow (and reading every connectivity record). It is
// tagged with the store's state (Versioned): a store that committed
// anything since (or a snapshot that is missing,
// damaged or of another format) means a rebuild from the store.
//
// Layout (little-endian): magic "UMBRAIX" and a format byte, the store
// state (transaction id and the root pages of the things and group
// members buckets, 8 bytes each), six sections each preceded by its length (8
// bytes), and a CRC-32C of everything before it (4 bytes). Things are
// numbered in name order. Connectivity is in it as the index had it; a
// connection it has as open becomes an ended one at Open
// (disconnectAtStart), as a rebuild makes it.
//
//	names:      count(4), then per thing uvarint length + name
//	registered: roaring bitmap (portable format)
//	sources:    count(4), then uvarint length + name
//	fields:     count(4), then uvarint length + name
//	values:     count(4), then per value field(4) kind(1) uvarint length + text,
//	            n(4), and the one thing id(4) if n == 1, else a roaring
//	            bitmap preceded by its length(4)
//	records:    total(4), then per thing its length(4) and that many ids(4)
const snapshotMagic = "UMBRAIX\x02"

// Versioned is what the registry needs of a store transaction to tag the
// snapshot (store.KV has it): the id of the last committed transaction
// that changed data, and the root page of a bucket (0 for none), which
// with the id tells one file's history from another's (a compacted copy
// or another server's file may reach the same id).
type Versioned interface {
	TxID() uint64
	BucketRoot(bucket string) uint64
}

// storeState is the store state a snapshot was taken at.
type storeState struct{ txid, things, members uint64 }

func stateOf(kv KV) (storeState, bool) {
	v, ok := kv.(Versioned)
	if !ok {
		return storeState{}, false
	}
	return storeState{v.TxID(), v.BucketRoot(bucketThings), v.BucketRoot(bucketMembers)}, true
}

func (s storeState) String() string {
	return fmt.Sprintf("transaction %d (roots %d, %d)", s.txid, s.things, s.members)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errStale is a snapshot of another store state.
var errStale = errors.New("stale")

// storeState returns the store's state.
func (r *Registry) storeState() (storeState, error) {
	var st storeState
	ok := false
	err := r.cfg.Store.ViewKV(func(kv KV) error {
		st, ok = stateOf(kv)
		return nil
	})
	if err == nil && !ok {
		err = errors.New("the store does not report transaction ids")
	}
	return st, err
}

// SaveSnapshot writes the fleet index to Config.SnapshotPath (nothing when
// it is empty), tagged with the store's transaction id, for the next Open.
// It commits what is written behind first. Call it after the last write
// (at shutdown): a change committed meanwhile whose index update has not
// happened yet would be missing from the snapshot.
func (r *Registry) SaveSnapshot(ctx context.Context) error {
	if r.cfg.SnapshotPath == "" {
		return nil
	}
	if err := r.cfg.Store.Flush(ctx); err != nil {
		return fmt.Errorf("registry: snapshot: %w", err)
	}
	st, err := r.storeState()
	if err != nil {
		return fmt.Errorf("registry: snapshot: %w", err)
	}
	r.ix.mu.RLock()
	data := r.ix.encode(st)
	r.ix.mu.RUnlock()
	if err := writeFileAtomic(r.cfg.SnapshotPath, data); err != nil {
		return fmt.Errorf("registry: snapshot: %w", err)
	}
	return nil
}

// IndexSource says where this Open's index came from: "snapshot", or
// "rebuilt: " and why the snapshot was not used.
func (r *Registry) IndexSource() string { return r.source }

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// encode writes the index (read lock held), numbering things in name order.
func (ix *index) encode(st storeState) []byte {
	keep := func(id uint32) []uint32 { return ix.recs[id] }
	live := func(id uint32) bool {
		if id < ix.sorted && ix.dead.Contains(id) || ix.names[id] == "" {
			return false
		}
		return ix.registered.Contains(id) || len(keep(id)) > 0
	}
	// New order: the sorted range as it is, merged with the rest sorted.
	var rest []uint32
	for id := ix.sorted; id < uint32(len(ix.names)); id++ {
		if live(id) {
			rest = append(rest, id)
		}
	}
	slices.SortFunc(rest, func(a, b uint32) int {
		switch {
		case ix.names[a] < ix.names[b]:
			return -1
		case ix.names[a] > ix.names[b]:
			return 1
		}
		return 0
	})
	order := make([]uint32, 0, int(ix.sorted)+len(rest))
	i := uint32(0)
	for i < ix.sorted || len(rest) > 0 {
		if i < ix.sorted && !live(i) {
			i++
			continue
		}
		if i < ix.sorted && (len(rest) == 0 || ix.names[i] < ix.names[rest[0]]) {
			order = append(order, i)
			i++
		} else {
			order, rest = append(order, rest[0]), rest[1:]
		}
	}

	// Values renumbered in order of first use; each value's new thing ids.
	vmap := make([]uint32, len(ix.vals))
	for j := range vmap {
		vmap[j] = ^uint32(0)
	}
	var vold []uint32    // new value id → old
	var lists [][]uint32 // new value id → new thing ids (ascending)
	var recs []uint32
	registered := roaring.New()
	recs = append(recs, 0) // total, patched below
	for nid, old := range order {
		if ix.registered.Contains(old) {
			registered.Add(uint32(nid))
		}
		rec := keep(old)
		recs = append(recs, uint32(len(rec)))
		for k := 0; k+1 < len(rec); {
			n := int(rec[k+1])
			recs = append(recs, rec[k], rec[k+1])
			for _, vid := range rec[k+2 : k+2+n] {
				nv := vmap[vid]
				if nv == ^uint32(0) {
					nv = uint32(len(vold))
					vmap[vid] = nv
					vold = append(vold, vid)
					lists = append(lists, nil)
				}
				lists[nv] = append(lists[nv], uint32(nid))
				recs = append(recs, nv)
			}
			k += 2 + n
		}
	}
	recs[0] = uint32(len(recs) - 1)

	var b bytes.Buffer
	b.WriteString(snapshotMagic)
	for _, v := range []uint64{st.txid, st.things, st.members} {
		b.Write(binary.LittleEndian.AppendUint64(nil, v))
	}
	section := func(write func(w *bytes.Buffer)) {
		var s bytes.Buffer
		write(&s)
		b.Write(binary.LittleEndian.AppendUint64(nil, uint64(s.Len())))
		b.Write(s.Bytes())
	}
	u32 := func(w *bytes.Buffer, v uint32) { w.Write(binary.LittleEndian.AppendUint32(nil, v)) }
	text := func(w *bytes.Buffer, s string) {
		w.Write(binary.AppendUvarint(nil, uint64(len(s))))
		w.WriteString(s)
	}
	section(func(w *bytes.Buffer) {
		u32(w, uint32(len(order)))
		for _, old := range order {
			text(w, ix.names[old])
		}
	})
	section(func(w *bytes.Buffer) { _, _ = registered.WriteTo(w) })
	section(func(w *bytes.Buffer) {
		u32(w, uint32(len(ix.sources)))
		for _, s := range ix.sources {
			text(w, s)
		}
	})
	section(func(w *bytes.Buffer) {
		u32(w, uint32(len(ix.fields)))
		for _, f := range ix.fields {
			text(w, f.name)
		}
	})
	section(func(w *bytes.Buffer) {
		u32(w, uint32(len(vold)))
		for nv, old := range vold {
			v := &ix.vals[old]
			u32(w, v.field)
			w.WriteByte(byte(v.v.Kind))
			text(w, v.v.S)
			ids := lists[nv]
			u32(w, uint32(len(ids)))
			if len(ids) == 1 {
				u32(w, ids[0])
				continue
			}
			bm := roaring.BitmapOf(ids...)
			bm.RunOptimize()
			data, _ := bm.ToBytes()
			u32(w, uint32(len(data)))
			w.Write(data)
		}
	})
	section(func(w *bytes.Buffer) {
		buf := make([]byte, 4*len(recs))
		for k, v := range recs {
			binary.LittleEndian.PutUint32(buf[4*k:], v)
		}
		w.Write(buf)
	})
	b.Write(binary.LittleEndian.AppendUint32(nil, crc32.Checksum(b.Bytes(), castagnoli)))
	return b.Bytes()
}

// reader decodes a section, recording the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errors.New("truncated or malformed section")
	}
	r.b = nil
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.fail()
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) text() []byte {
	n, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail()
		return nil
	}
	r.b = r.b[k:]
	return r.bytes(n)
}

// loadSnapshot reads the snapshot at path if it is intact and was taken
// at store state st. Its sections are decoded in parallel.
func loadSnapshot(path string, st storeState) (*index, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	const header = len(snapshotMagic) + 3*8
	if len(data) < header+4 || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, errors.New("not an index snapshot of this format")
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("checksum mismatch (damaged file)")
	}
	h := body[len(snapshotMagic):]
	taken := storeState{binary.LittleEndian.Uint64(h), binary.LittleEndian.Uint64(h[8:]), binary.LittleEndian.Uint64(h[16:])}
	if taken != st {
		return nil, fmt.Errorf("%w: taken at %s, the store is at %s", errStale, taken, st)
	}
	rest := body[header:]
	var sec [6][]byte
	for i := range sec {
		if len(rest) < 8 {
			return nil, errors.New("truncated snapshot")
		}
		n := binary.LittleEndian.Uint64(rest)
		rest = rest[8:]
		if uint64(len(rest)) < n {
			return nil, errors.New("truncated snapshot")
		}
		sec[i], rest = rest[:n], rest[n:]
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing bytes in snapshot")
	}
	ix := newIndex()
	var wg sync.WaitGroup
	var errs [4]error
	wg.Go(func() { errs[0] = ix.decodeNames(sec[0]) })
	wg.Go(func() { errs[1] = ix.decodeValues(sec[2], sec[3], sec[4]) })
	wg.Go(func() { errs[2] = ix.decodeRecords(sec[5]) })
	wg.Go(func() { errs[3] = ix.registered.UnmarshalBinary(sec[1]) })
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	if err := ix.validate(); err != nil {
		return nil, err
	}
	return ix, nil
}

func (ix *index) decodeNames(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(len(b)) {
		return errors.New("names: bad count")
	}
	arena := string(r.b) // one allocation for every name
	ix.names = make([]string, n)
	off := 0
	for i := range ix.names {
		l, k := binary.Uvarint(r.b[off:])
		if k <= 0 || uint64(len(r.b)-off-k) < l {
			return errors.New("names: truncated")
		}
		off += k
		ix.names[i] = arena[off : off+int(l)]
		off += int(l)
		if ix.names[i] == "" || i > 0 && ix.names[i-1] >= ix.names[i] {
			return errors.New("names: not in order")
		}
	}
	if off != len(r.b) {
		return errors.New("names: trailing bytes")
	}
	ix.sorted = n
	return nil
}

func (ix *index) decodeValues(sources, fields, values []byte) error {
	r := &reader{b: sources}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		ix.sourceID(string(r.text()))
	}
	if r.err != nil || len(r.b) != 0 {
		return errors.New("sources: malformed")
	}
	r = &reader{b: fields}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		name := string(r.text())
		if _, dup := ix.fieldIDs[name]; dup {
			return errors.New("fields: duplicate")
		}
		ix.fieldIDs[name] = uint32(len(ix.fields))
		ix.fields = append(ix.fields, &field{name: name, values: map[string]uint32{}})
	}
	if r.err != nil || len(r.b) != 0 {
		return errors.New("fields: malformed")
	}
	r = &reader{b: values}
	n := r.u32()
	if uint64(n) > uint64(len(values)) {
		return errors.New("values: bad count")
	}
	ix.vals = make([]fvalue, n)
	perField := make([]int, len(ix.fields))
	for vid := range ix.vals {
		v := &ix.vals[vid]
		v.field = r.u32()
		kind := r.bytes(1)
		s := r.text()
		v.n = r.u32()
		if r.err != nil || int(v.field) >= len(ix.fields) || kind[0] > byte(query.Bool) || v.n == 0 {
			return errors.New("values: malformed")
		}
		perField[v.field]++
		v.v = query.Value{Kind: query.Kind(kind[0]), S: string(s)}
		if v.n == 1 {
			v.one = r.u32()
		} else {
			data := r.bytes(uint64(r.u32()))
			if r.err != nil {
				return errors.New("values: malformed")
			}
			v.ids = roaring.New()
			if err := v.ids.UnmarshalBinary(data); err != nil {
				return fmt.Errorf("values: %w", err)
			}
			if v.ids.GetCardinality() != uint64(v.n) {
				return errors.New("values: count mismatch")
			}
		}
	}
	if r.err != nil || len(r.b) != 0 {
		return errors.New("values: malformed")
	}
	// The lookup keys (parsing numbers, folding case) on every core, then
	// maps made at their final size.
	keys := make([]string, n)
	const chunk = 16384
	parallel((len(keys)+chunk-1)/chunk, func(c int) {
		for i := c * chunk; i < min((c+1)*chunk, len(keys)); i++ {
			keys[i] = normKey(ix.vals[i].v)
		}
	})
	for fid, f := range ix.fields {
		f.values = make(map[string]uint32, perField[fid])
	}
	for vid, key := range keys {
		ix.fields[ix.vals[vid].field].values[key] = uint32(vid)
	}
	for fid, f := range ix.fields {
		if len(f.values) != perField[fid] {
			return errors.New("values: duplicate")
		}
	}
	return nil
}

func (ix *index) decodeRecords(b []byte) error {
	if len(b) < 4 || len(b)%4 != 0 {
		return errors.New("records: malformed")
	}
	total := binary.LittleEndian.Uint32(b)
	if uint64(total)*4 != uint64(len(b)-4) {
		return errors.New("records: bad length")
	}
	arena := make([]uint32, total)
	for i := range arena {
		arena[i] = binary.LittleEndian.Uint32(b[4+4*i:])
	}
	var recs [][]uint32
	for off := 0; off < len(arena); {
		n := int(arena[off])
		off++
		if n > len(arena)-off {
			return errors.New("records: truncated")
		}
		if n == 0 {
			recs = append(recs, nil)
		} else {
			recs = append(recs, arena[off:off+n:off+n])
		}
		off += n
	}
	ix.recs = recs
	return nil
}

// validate checks that the decoded parts fit together: every record's
// source and value ids exist, a value of one thing names it, and the
// values count as many things as the records list (the checksum already
// guards against damage; this guards against a writer's mistake).
func (ix *index) validate() error {
	if len(ix.recs) != len(ix.names) {
		return errors.New("records and names disagree")
	}
	if ix.registered.GetCardinality() > 0 && ix.registered.Maximum() >= uint32(len(ix.names)) {
		return errors.New("registered ids out of range")
	}
	var posts uint64
	for id, rec := range ix.recs {
		for i := 0; i < len(rec); {
			if i+1 >= len(rec) || int(rec[i]) >= len(ix.sources) || int(rec[i+1]) > len(rec)-i-2 {
				return errors.New("records: bad segment")
			}
			n := int(rec[i+1])
			for _, vid := range rec[i+2 : i+2+n] {
				if int(vid) >= len(ix.vals) {
					return errors.New("records: value out of range")
				}
				if v := &ix.vals[vid]; v.ids == nil && v.one != uint32(id) {
					return errors.New("records and values disagree")
				}
				posts++
			}
			i += 2 + n
		}
	}
	var total uint64
	for i := range ix.vals {
		total += uint64(ix.vals[i].n)
	}
	if total != posts {
		return errors.New("records and values disagree")
	}
	return nil
}
