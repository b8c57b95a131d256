package query

import "testing"

const benchQuery = "attributes.location:factory-A AND shadow.reported.firmware_version<2.2.0 AND connectivity.connected:true"

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(benchQuery); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatch: a typical 3-term query (attribute equality, version
// comparison, bool) on one record that matches all three.
func BenchmarkMatch(b *testing.B) {
	fleet := loadFleet(b)
	var r *fleetRecord
	for _, f := range fleet {
		if f.name == "sensor-001" {
			r = f
		}
	}
	q := MustParse(benchQuery)
	if !q.Match(r) {
		b.Fatal("no match")
	}
	b.ReportAllocs()
	for b.Loop() {
		q.Match(r)
	}
}

// BenchmarkMatchFleet: the same query over the 30 things of the golden fleet.
func BenchmarkMatchFleet(b *testing.B) {
	fleet := loadFleet(b)
	q := MustParse(benchQuery)
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range fleet {
			q.Match(r)
		}
	}
}

func BenchmarkMatchValue(b *testing.B) {
	for _, c := range []struct {
		name, q string
		v       Value
	}{
		{"eq-string", "attributes.location:factory-A", Str("Factory-A")},
		{"eq-number", "shadow.reported.battery:85", Num("85.0")},
		{"gt-number", "shadow.reported.battery>80", Num("85")},
		{"lt-version", "shadow.reported.firmware_version<2.2.0", Str("2.1.3")},
		{"lt-version-loose", "shadow.reported.firmware_version<2.2", Str("v2.1")},
		{"wildcard", "thingName:sensor-*1", Str("sensor-0001")},
	} {
		b.Run(c.name, func(b *testing.B) {
			tm := MustParse(c.q).Root.(*Term)
			b.ReportAllocs()
			for b.Loop() {
				tm.MatchValue(c.v)
			}
		})
	}
}
