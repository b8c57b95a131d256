package registry

import "github.com/umbra-iot/umbra/registry/query"

// ReferenceValues are the values a thing is indexed with, computed from its
// sources without the index (for the reference evaluation of the property
// tests): its registry record with its direct static groups, its
// connectivity, and its stored shadows by name.
func ReferenceValues(r *Registry, t *Thing, groups []string, c *Connectivity, shadows map[string][]byte) map[string][]query.Value {
	m := map[string][]query.Value{}
	add := func(vs []fieldValue) {
		for _, fv := range vs {
			m[fv.field] = append(m[fv.field], fv.v)
		}
	}
	if t != nil {
		add(r.thingValues(*t, groups))
		m["thingName"] = []query.Value{str(t.Name)}
	}
	if c != nil {
		add(connValues(*c))
	}
	for name, doc := range shadows {
		add(shadowValues(name, doc))
	}
	return m
}
