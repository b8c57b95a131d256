package registry

import (
	"github.com/tidwall/gjson"
)

// deltaSince is when the oldest desired change still pending was written:
// the smallest desired-metadata timestamp under any path of the delta.
// Together with the current time it says how long a device has failed to
// converge (the query field shadow.deltaAgeSeconds).
func deltaSince(doc, delta []byte) int64 {
	meta := gjson.GetBytes(doc, "metadata.desired")
	var oldest int64
	var walk func(d, m gjson.Result)
	walk = func(d, m gjson.Result) {
		if d.IsObject() && m.IsObject() && !m.Get("timestamp").Exists() {
			d.ForEach(func(k, v gjson.Result) bool {
				walk(v, m.Get(gjson.Escape(k.String())))
				return true
			})
			return
		}
		oldest = minTimestamp(m, oldest)
	}
	walk(gjson.ParseBytes(delta), meta)
	return oldest
}

// minTimestamp folds every "timestamp" number under m into oldest.
func minTimestamp(m gjson.Result, oldest int64) int64 {
	switch {
	case m.IsObject():
		if ts := m.Get("timestamp"); ts.Type == gjson.Number && len(m.Map()) == 1 {
			if t := ts.Int(); oldest == 0 || t < oldest {
				return t
			}
			return oldest
		}
		m.ForEach(func(_, v gjson.Result) bool { oldest = minTimestamp(v, oldest); return true })
	case m.IsArray():
		m.ForEach(func(_, v gjson.Result) bool { oldest = minTimestamp(v, oldest); return true })
	}
	return oldest
}
