package shadow

// Merge rules (spec §3.1), applied to desired and reported separately, with the
// stored metadata edited alongside so it always mirrors the merged state:
//
//   - null, or an empty object {}, deletes the key (a no-op when absent).
//   - An object merges recursively into a stored object. Into anything else (a
//     scalar, an array, nothing) it merges as into an empty object, so its nulls
//     vanish; if nothing is left the key is deleted, and in general an object
//     emptied by a merge is removed. Empty objects are never stored.
//   - Scalars and arrays replace the stored value whole, whatever its type;
//     their metadata is rebuilt with the update's timestamp.
//   - Untouched keys keep their values and their old timestamps.

// mergeInto merges the patch object p into the state object s, whose metadata
// object is sm. p is only read; s and sm are edited in place.
func mergeInto(s, sm, p, leaf *node) {
	for _, m := range p.members {
		pv := m.val
		switch {
		case pv.isDeletion():
			s.del(m.name)
			sm.del(m.name)
		case pv.kind == kindObject:
			child, childMeta := s.get(m.name), sm.get(m.name)
			if !child.isObject() {
				child, childMeta = newObject(), newObject()
			} else if !childMeta.isObject() {
				childMeta = newObject()
			}
			mergeInto(child, childMeta, pv, leaf)
			if child.live == 0 {
				s.del(m.name)
				sm.del(m.name)
				continue
			}
			s.set(m.name, m.rawName, child)
			sm.set(m.name, m.rawName, childMeta)
		default:
			s.set(m.name, m.rawName, pv)
			sm.set(m.name, m.rawName, valueMeta(pv, leaf))
		}
	}
}

// applySection applies the request's patch for one section (nil: untouched;
// null or {}: clear the section; an object: merge).
func applySection(s, sm **node, patch, leaf *node) {
	switch {
	case patch == nil:
	case patch.isDeletion():
		*s, *sm = newObject(), newObject()
	default:
		mergeInto(*s, *sm, patch, leaf)
	}
}
