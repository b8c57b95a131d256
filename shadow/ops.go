package shadow

import (
	"math"
	"time"
)

// Current is the stored state of one shadow as the service read it.
type Current struct {
	Doc     []byte // stored document, nil when the shadow does not exist
	Version int64  // when Doc is nil: the version a tombstone remembers (0 = never existed, or expired)
	// Rev is the store's revision of this state, for stores that commit by
	// compare-and-set (0: absent, or a store that does not use it). The
	// Service hands it back in Change.Rev.
	Rev uint64
}

// UpdateResult is everything an accepted update produces. Accepted and Delta
// share version and timestamp (spec §1.2); clients rely on it.
type UpdateResult struct {
	Doc       []byte // the new stored document
	Version   int64
	Accepted  []byte // /update/accepted: the request's state, its metadata, version, timestamp[, clientToken]
	Delta     []byte // /update/delta, nil when the resulting delta is empty
	Documents []byte // /update/documents: previous (null on creation) and current snapshots

	docs documentsParts // what documents() builds Documents from
}

// documentsParts is what /update/documents is made of, kept so that it is
// built only when someone subscribes to it.
type documentsParts struct {
	prevDoc          []byte
	exists, hasToken bool
	prevVersion, ts  int64
	snapshotLen      int
	token            string
}

// documents builds the /update/documents payload: previous (null on
// creation) and current snapshots.
func (res *UpdateResult) documents() []byte {
	p := &res.docs
	w := newObj(make([]byte, 0, len(p.prevDoc)+len(res.Doc)+96))
	w.key("previous")
	if p.exists {
		// The stored text as loaded: the update did not touch it.
		prev := document{stateText: storedSection(p.prevDoc, "state"), metadataText: storedSection(p.prevDoc, "metadata")}
		w.buf = prev.storedSnapshot(w.buf, p.prevVersion)
	} else {
		w.buf = append(w.buf, "null"...)
	}
	w.raw("current", res.Doc[:p.snapshotLen])
	w.buf = append(w.buf, '}')
	w.int("timestamp", p.ts)
	w.token(p.token, p.hasToken)
	return w.close()
}

// Update applies a parsed request to the current state (spec §3.6 steps 11-12):
// the version check, the merge, convergence, the size check and the replies.
// It does not retain cur.Doc, so the caller may pass bytes that are valid only
// inside a storage transaction.
//
// Version rules: an existing shadow at version V accepts "version": V and
// becomes V+1, any other value is 409 Version conflict. An absent shadow whose
// last version was T (a tombstone, 0 if none) is created at T+1. A "version"
// in the request must then be T+1 (the version it is created with;
// Greengrass accepts only 1 for a new shadow) or, when a tombstone exists
// (T > 0), T itself: the version /delete/accepted reported, which is what
// aws-iot-device-sdk v1 sends on its next update. Anything else is 400
// Invalid version.
func Update(cur Current, req *UpdateRequest, now time.Time, o Options) (UpdateResult, *Error) {
	return update(cur, req, now, o, true)
}

// update is Update; documents false leaves res.Documents nil (nobody
// subscribes to /update/documents, so it is not built).
func update(cur Current, req *UpdateRequest, now time.Time, o Options, documents bool) (UpdateResult, *Error) {
	if req == nil {
		return UpdateResult{}, ErrInternal
	}
	o = o.Normalize()
	exists := cur.Doc != nil
	d := emptyDocument()
	if exists {
		var ok bool
		if d, ok = loadDocument(cur.Doc); !ok {
			return UpdateResult{}, ErrInternal
		}
	} else {
		d.version = max(cur.Version, 0)
	}
	if d.version == math.MaxInt64 {
		return UpdateResult{}, ErrInternal
	}
	if req.HasVersion {
		if exists && req.Version != d.version {
			return UpdateResult{}, ErrVersionConflict
		}
		if !exists && req.Version != d.version+1 && (d.version == 0 || req.Version != d.version) {
			return UpdateResult{}, ErrInvalidVersion
		}
	}

	prevVersion, prevSize := d.version, 0
	if exists {
		prevSize = len(d.stateText)
	}

	ts := now.Unix()
	leaf := timestampLeaf(ts)
	if req.stateNull {
		d.desired, d.desiredMeta = newObject(), newObject()
		d.reported, d.reportedMeta = newObject(), newObject()
	}
	applySection(&d.desired, &d.desiredMeta, req.desired, leaf)
	applySection(&d.reported, &d.reportedMeta, req.reported, leaf)
	if o.Converge != ConvergeKeep {
		prune(d.desired, d.desiredMeta, d.reported)
	}
	d.version++
	doc, size, snapshotLen := d.marshal(make([]byte, 0, len(cur.Doc)+len(req.echo)*3+64), ts)
	// The limit applies to the merged state. An update that does not grow a
	// document already over the limit (because the limit was lowered) is let
	// through, so such a document can still be shrunk.
	if size > o.MaxDocumentBytes && size > prevSize {
		return UpdateResult{}, ErrPayloadTooLarge
	}

	res := UpdateResult{Doc: doc, Version: d.version}

	w := newObj(make([]byte, 0, len(req.echo)*3+64))
	w.raw("state", req.echo)
	w.node("metadata", req.acceptedMeta(leaf))
	w.int("version", d.version)
	w.int("timestamp", ts)
	w.token(req.ClientToken, req.HasToken)
	res.Accepted = w.close()

	if delta, meta := computeDelta(d.desired, d.desiredMeta, d.reported); delta != nil {
		w := newObj(nil)
		w.node("state", delta)
		w.node("metadata", meta)
		w.int("version", d.version)
		w.int("timestamp", ts)
		w.token(req.ClientToken, req.HasToken)
		res.Delta = w.close()
	}

	// /update/documents: built now for Update's callers, on demand for the
	// service (which publishes it only when someone subscribes).
	res.docs = documentsParts{prevDoc: cur.Doc, exists: exists, prevVersion: prevVersion, snapshotLen: snapshotLen,
		ts: ts, token: req.ClientToken, hasToken: req.HasToken}
	if documents {
		res.Documents = res.documents()
	}
	return res, nil
}

// Get is the /get/accepted payload: the full document with state.delta (when
// non-empty), metadata for desired and reported (no metadata.delta: the AWS SDK
// model and Greengrass have none), the version, the time of this reply, and the
// clientToken. An absent shadow is ErrNoShadow: reply with Ref.NotFound().
func Get(cur Current, clientToken string, hasToken bool, now time.Time) ([]byte, *Error) {
	if cur.Doc == nil {
		return nil, ErrNoShadow
	}
	d, ok := loadDocument(cur.Doc)
	if !ok {
		return nil, ErrInternal
	}
	// Only the delta is computed; the stored state and metadata are copied.
	var deltaText []byte
	if delta, _ := computeDelta(d.desired, nil, d.reported); delta != nil {
		deltaText = appendNode(nil, delta)
	}
	w := newObj(make([]byte, 0, len(cur.Doc)+len(deltaText)+len(clientToken)+96))
	w.key("state")
	if deltaText != nil {
		w.buf = append(w.buf, d.stateText[:len(d.stateText)-1]...) // the stored state minus its '}'
		if len(d.stateText) > len("{}") {
			w.buf = append(w.buf, ',')
		}
		w.buf = append(w.buf, `"delta":`...)
		w.buf = append(w.buf, deltaText...)
		w.buf = append(w.buf, '}')
	} else {
		w.buf = append(w.buf, d.stateText...)
	}
	w.raw("metadata", d.metadataText)
	w.int("version", d.version)
	w.int("timestamp", now.Unix())
	w.token(clientToken, hasToken)
	return w.close(), nil
}

// Delete is the /delete/accepted payload {"version","timestamp"[,"clientToken"]}
// where version is the version the shadow had when deleted (Greengrass; the
// cloud is unconfirmed). The caller removes the document and keeps a tombstone
// with that version. Delete only reads the version, so even an unreadable
// document can be deleted. An absent shadow is ErrNoShadow: reply with
// Ref.NotFound().
func Delete(cur Current, clientToken string, hasToken bool, now time.Time) ([]byte, *Error) {
	if cur.Doc == nil {
		return nil, ErrNoShadow
	}
	w := newObj(make([]byte, 0, 64))
	w.int("version", DocVersion(cur.Doc))
	w.int("timestamp", now.Unix())
	w.token(clientToken, hasToken)
	return w.close(), nil
}

// Rejected is the …/rejected payload {"code","message","timestamp"[,"clientToken"]}.
// A nil err is reported as 500.
func Rejected(err *Error, clientToken string, hasToken bool, now time.Time) []byte {
	if err == nil {
		err = ErrInternal
	}
	w := newObj(make([]byte, 0, 64+len(err.Message)+len(clientToken)))
	w.int("code", int64(err.Code))
	w.str("message", err.Message)
	w.int("timestamp", now.Unix())
	w.token(clientToken, hasToken)
	return w.close()
}
