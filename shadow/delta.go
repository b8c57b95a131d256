package shadow

// computeDelta is spec §3.5: the desired values that differ from reported, with
// the full path from the root kept. A key absent from reported is in the delta
// whole; two objects are compared key by key; anything else (scalars, arrays,
// mixed types) is compared as one value with equal and, if different, the
// desired value goes in whole. Keys only in reported never appear. The delta's
// metadata is the desired metadata restricted to the delta's paths. Both results
// are nil when the delta is empty. The returned trees share nodes with desired.
func computeDelta(desired, desiredMeta, reported *node) (delta, meta *node) {
	for _, m := range desired.members {
		dv := m.val
		if dv == nil {
			continue
		}
		dm := desiredMeta.get(m.name)
		rv := reported.get(m.name)
		var out, outMeta *node
		switch {
		case rv == nil:
			out, outMeta = dv, dm
		case dv.kind == kindObject && rv.kind == kindObject:
			if !dm.isObject() {
				dm = nil
			}
			out, outMeta = computeDelta(dv, dm, rv)
		case !equal(dv, rv):
			out, outMeta = dv, dm
		}
		if out == nil {
			continue
		}
		if delta == nil {
			delta, meta = newObject(), newObject()
		}
		delta.set(m.name, m.rawName, out)
		if outMeta != nil {
			meta.set(m.name, m.rawName, outMeta)
		}
	}
	return delta, meta
}

// prune is Umbra's convergence (ConvergePrune): it removes from desired, and
// from its metadata, every value that equals reported at the same path, and
// every object that this empties. What remains of desired is exactly its delta.
func prune(desired, desiredMeta, reported *node) {
	for _, m := range desired.members {
		dv := m.val
		if dv == nil {
			continue
		}
		rv := reported.get(m.name)
		switch {
		case rv == nil:
		case dv.kind == kindObject && rv.kind == kindObject:
			dm := desiredMeta.get(m.name)
			if !dm.isObject() {
				dm = newObject()
			}
			prune(dv, dm, rv)
			if dv.live == 0 {
				desired.del(m.name)
				desiredMeta.del(m.name)
			}
		case equal(dv, rv):
			desired.del(m.name)
			desiredMeta.del(m.name)
		}
	}
}
