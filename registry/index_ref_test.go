package registry_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/fakeclock"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// randFleet drives a registry through its public API with random things,
// types, static groups (with parents), dynamic groups, connectivity and
// shadows, and keeps what a reference evaluation needs that the store
// does not say directly (static memberships).
type randFleet struct {
	t       *testing.T
	rng     *rand.Rand
	dir     string
	clock   *fakeclock.Clock
	db      *store.DB
	reg     *registry.Registry
	svc     *shadow.Service
	members map[string]map[string]bool // thing → static groups it is directly in
	names   []string                   // every name ever used
	live    map[string]registry.Live
	static  []string
}

func snapshotPath(dir string) string { return filepath.Join(dir, "registry.index") }

// open opens the store and registry on rf.dir with the index snapshot.
func (rf *randFleet) open() {
	rf.t.Helper()
	rf.openWith(snapshotPath(rf.dir))
}

func (rf *randFleet) openWith(snapshot string) {
	rf.t.Helper()
	db, err := store.Open(rf.dir, store.Options{NoSync: true})
	if err != nil {
		rf.t.Fatal(err)
	}
	rf.db = db
	rf.reg, err = registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}, Clock: rf.clock.Now, SnapshotPath: snapshot})
	if err != nil {
		rf.t.Fatal(err)
	}
	rf.svc = shadow.NewService(shadow.Config{Store: storeadapt.ShadowStore{DB: db}, Clock: rf.clock.Now, OnEvent: rf.reg.ShadowChanged})
	rf.live = map[string]registry.Live{}
}

// close saves the index snapshot (when save) and closes the store.
func (rf *randFleet) close(save bool) {
	rf.t.Helper()
	if save {
		if err := rf.reg.SaveSnapshot(context.Background()); err != nil {
			rf.t.Fatal(err)
		}
	}
	if err := rf.db.Close(); err != nil {
		rf.t.Fatal(err)
	}
}

var (
	refLocations = []string{"factory-A", "factory-a", "Factory-B", "hall 2", "lab"}
	refRings     = []string{"canary", "early", "general"}
	refFirmware  = []string{"2.1.3", "2.1.4", "2.2.0", "1.9.7", "v2.0.0-rc1", "beta"}
	refModes     = []string{"eco", "ECO", "boost", "off"}
	refReasons   = []string{"CLIENT_INITIATED_DISCONNECT", "CONNECTION_LOST", "MQTT_KEEP_ALIVE_TIMEOUT"}
)

func (rf *randFleet) pick(s []string) string { return s[rf.rng.IntN(len(s))] }

func (rf *randFleet) name() string {
	if len(rf.names) > 0 && rf.rng.IntN(3) == 0 {
		return rf.pick(rf.names)
	}
	n := fmt.Sprintf("%s-%02d", rf.pick([]string{"dev", "Dev", "sensor", "esp32", "A", "z"}), rf.rng.IntN(60))
	rf.names = append(rf.names, n)
	return n
}

func (rf *randFleet) attrs() map[string]string {
	a := map[string]string{}
	if rf.rng.IntN(4) > 0 {
		a["location"] = rf.pick(refLocations)
	}
	if rf.rng.IntN(3) > 0 {
		a["ring"] = rf.pick(refRings)
	}
	if rf.rng.IntN(3) == 0 {
		a["rev"] = fmt.Sprint(rf.rng.IntN(4))
	}
	return a
}

func (rf *randFleet) shadowDoc() string {
	var parts []string
	if rf.rng.IntN(5) > 0 {
		parts = append(parts, fmt.Sprintf(`"fw":%q`, rf.pick(refFirmware)))
	}
	if rf.rng.IntN(3) > 0 {
		parts = append(parts, fmt.Sprintf(`"battery":%s`, rf.pick([]string{"5", "50", "50.0", "80", "100", "1e2", "-3"})))
	}
	if rf.rng.IntN(3) == 0 {
		parts = append(parts, fmt.Sprintf(`"temps":[%d,%d]`, rf.rng.IntN(40), rf.rng.IntN(40)))
	}
	if rf.rng.IntN(3) == 0 {
		parts = append(parts, fmt.Sprintf(`"pos":{"lat":%d,"site":%q}`, rf.rng.IntN(90), rf.pick(refLocations)))
	}
	if rf.rng.IntN(3) == 0 {
		parts = append(parts, fmt.Sprintf(`"on":%v`, rf.rng.IntN(2) == 0))
	}
	if rf.rng.IntN(4) == 0 {
		parts = append(parts, `"mode":null`)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// step makes one random change.
func (rf *randFleet) step() {
	ctx := context.Background()
	switch op := rf.rng.IntN(20); {
	case op < 5:
		n := registry.NewThing{Name: rf.name(), Attributes: rf.attrs()}
		if rf.rng.IntN(4) == 0 {
			n.Type = rf.pick([]string{"board", "gateway"})
		}
		_, _ = rf.reg.CreateThing(ctx, n)
	case op < 7:
		loc := rf.pick(refLocations)
		_, _ = rf.reg.UpdateThing(ctx, rf.name(), registry.ThingPatch{Attributes: map[string]*string{"location": &loc, "rev": nil}})
	case op < 8:
		if th := rf.name(); rf.reg.DeleteThing(ctx, th, 0) == nil {
			delete(rf.members, th)
		}
	case op < 10:
		th, g := rf.name(), rf.pick(rf.static)
		if rf.rng.IntN(3) == 0 {
			if rf.reg.RemoveFromGroup(ctx, g, th) == nil {
				delete(rf.members[th], g)
			}
		} else if rf.reg.AddToGroup(ctx, g, th) == nil {
			if rf.members[th] == nil {
				rf.members[th] = map[string]bool{}
			}
			rf.members[th][g] = true
		}
	case op < 15:
		th := rf.name()
		shadowName := ""
		if rf.rng.IntN(4) == 0 {
			shadowName = "cfg"
		}
		payload := `{"state":{"reported":` + rf.shadowDoc() + `}}`
		if rf.rng.IntN(3) == 0 {
			payload = fmt.Sprintf(`{"state":{"desired":{"fw":%q,"mode":%q}}}`, rf.pick(refFirmware), rf.pick(refModes))
		}
		if rf.rng.IntN(12) == 0 {
			rf.svc.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: th, Name: shadowName}, Op: shadow.OpDelete, Origin: shadow.OriginInternal})
			return
		}
		rf.svc.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: th, Name: shadowName}, Op: shadow.OpUpdate, Payload: []byte(payload), Origin: shadow.OriginInternal})
	case op < 18:
		th := rf.name()
		if l, ok := rf.live[th]; ok && rf.rng.IntN(2) == 0 {
			rf.reg.Disconnected(registry.Session{ClientID: th}, l, rf.pick(refReasons))
			delete(rf.live, th)
		} else {
			rf.live[th] = rf.reg.Connected(registry.Session{ClientID: th, Address: "10.0.0.1:1883", ProtocolVersion: 4})
		}
	default:
		rf.clock.Add(time.Duration(rf.rng.IntN(7200)) * time.Second)
	}
}

func newRandFleet(t *testing.T, seed uint64) *randFleet {
	rf := &randFleet{t: t, rng: rand.New(rand.NewPCG(seed, 17)), dir: t.TempDir(), clock: fakeclock.New(time.Unix(1_800_000_000, 0)), members: map[string]map[string]bool{}}
	rf.open()
	ctx := context.Background()
	if _, err := rf.reg.CreateType(ctx, registry.ThingType{Name: "board"}); err != nil {
		t.Fatal(err)
	}
	if _, err := rf.reg.CreateType(ctx, registry.ThingType{Name: "gateway"}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []registry.Group{{Name: "fleet"}, {Name: "eu", Parent: "fleet"}, {Name: "eu-north", Parent: "eu"}, {Name: "lab"},
		{Name: "old-fw", Query: "shadow.reported.fw<2.1.4"}, {Name: "eu-old", Query: "thingGroupNames:eu AND thingGroupNames:old-fw"},
		{Name: "drifting", Query: "shadow.hasDelta:true OR shadow.name.cfg.hasDelta:true"}} {
		if _, err := rf.reg.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		if !g.Dynamic() {
			rf.static = append(rf.static, g.Name)
		}
	}
	return rf
}

// refRecord is one thing as the reference evaluation sees it: values
// computed from its sources, delta age from the stored start time, dynamic
// groups by matching their queries on the record itself.
type refRecord struct {
	vals    map[string][]query.Value
	dynamic []*registry.Group
	queries map[string]*query.Query
	now     time.Time
	depth   int
}

func (r refRecord) Values(field string) []query.Value {
	if strings.HasSuffix(field, ".deltaAgeSeconds") {
		var out []query.Value
		for _, v := range r.vals[strings.TrimSuffix(field, "deltaAgeSeconds")+"deltaSince"] {
			var since int64
			if _, err := fmt.Sscan(v.S, &since); err == nil {
				out = append(out, query.Num(fmt.Sprint(max(r.now.Unix()-since, 0))))
			}
		}
		return out
	}
	out := slices.Clone(r.vals[field])
	if field == "thingGroupNames" && r.depth < 8 {
		for _, g := range r.dynamic {
			sub := r
			sub.depth++
			if r.queries[g.Name].Match(sub) {
				out = append(out, query.Str(g.Name))
			}
		}
	}
	return out
}

// reference computes every registered thing's record from the store and
// the registry's connectivity, without the index.
func (rf *randFleet) reference() (names []string, recs map[string]refRecord) {
	rf.t.Helper()
	shadows := map[string]map[string][]byte{}
	if err := rf.db.ForEachShadow(func(k store.ShadowKey, doc []byte) error {
		if shadows[k.Thing] == nil {
			shadows[k.Thing] = map[string][]byte{}
		}
		shadows[k.Thing][k.Name] = slices.Clone(doc)
		return nil
	}); err != nil {
		rf.t.Fatal(err)
	}
	var dynamic []*registry.Group
	queries := map[string]*query.Query{}
	for _, g := range rf.reg.Groups() {
		if g.Dynamic() {
			dynamic = append(dynamic, &g)
			queries[g.Name] = query.MustParse(g.Query)
		}
	}
	recs = map[string]refRecord{}
	after := ""
	for {
		page, next, err := rf.reg.ListThings(after, 50)
		if err != nil {
			rf.t.Fatal(err)
		}
		for _, th := range page {
			var groups []string
			for g := range rf.members[th.Name] {
				groups = append(groups, g)
			}
			sort.Strings(groups)
			var conn *registry.Connectivity
			if c, ok := rf.reg.Connectivity(th.Name); ok {
				conn = &c
			}
			recs[th.Name] = refRecord{vals: registry.ReferenceValues(rf.reg, &th, groups, conn, shadows[th.Name]), dynamic: dynamic, queries: queries, now: rf.clock.Now()}
			names = append(names, th.Name)
		}
		if next == "" {
			break
		}
		after = next
	}
	sort.Strings(names)
	return names, recs
}

var refFields = []string{"thingName", "thingTypeName", "thingGroupNames", "registry.version", "attributes.location", "attributes.ring", "attributes.rev",
	"connectivity.connected", "connectivity.disconnectReason", "connectivity.timestamp", "shadow.version", "shadow.hasDelta", "shadow.deltaAgeSeconds",
	"shadow.reported.fw", "shadow.reported.battery", "shadow.reported.temps", "shadow.reported.pos.lat", "shadow.reported.pos.site", "shadow.reported.on",
	"shadow.reported.mode", "shadow.desired.fw", "shadow.desired.mode", "shadow.delta.fw", "shadow.delta.mode", "shadow.name.cfg.reported.fw",
	"shadow.name.cfg.hasDelta", "shadow.name.cfg.desired.mode", "shadow.name.cfg.deltaAgeSeconds"}

var refValues = []string{"factory-a", "FACTORY-A", `"hall 2"`, "lab", "canary", "eco", "2.1.3", "2.1.4", "v2.0.0-rc1", "beta", "50", "1e2", "100", "-3",
	"true", "FALSE", "dev-*", "D?v-1*", "*a*", "fleet", "eu", "eu-north", "old-fw", "eu-old", "drifting", "board", "1", "2", "0", "3600",
	"CONNECTION_LOST", "Dev-07", "esp32-1?"}

func (rf *randFleet) clause() string {
	f := rf.pick(refFields)
	switch rf.rng.IntN(10) {
	case 0:
		return f + ":*"
	case 1:
		return f + rf.pick([]string{"<", "<=", ">", ">="}) + rf.pick(refValues)
	case 2:
		lo, hi := rf.pick([]string{"*", "0", "2.1.3", "50", "a", "1800000000"}), rf.pick([]string{"*", "100", "2.2.0", "z", "90"})
		return f + ":" + rf.pick([]string{"[", "{"}) + lo + " TO " + hi + rf.pick([]string{"]", "}"})
	}
	return f + ":" + rf.pick(refValues)
}

func (rf *randFleet) query(depth int) string {
	if depth > 2 || rf.rng.IntN(3) == 0 {
		if rf.rng.IntN(25) == 0 {
			return "*"
		}
		return rf.clause()
	}
	switch rf.rng.IntN(4) {
	case 0:
		return "NOT " + rf.query(depth+1)
	case 1:
		return "(" + rf.query(depth+1) + " OR " + rf.query(depth+1) + ")"
	}
	return rf.query(depth+1) + " AND " + rf.query(depth+1)
}

// check compares the registry's answers with the reference evaluation for
// n random queries: Count, Search page by page, MatchThing, ThingGroups and
// Buckets. It returns the results as text, to compare modes.
func (rf *randFleet) check(n int, label string) string {
	rf.t.Helper()
	names, recs := rf.reference()
	if got := rf.reg.Registered(); got != uint64(len(names)) {
		rf.t.Fatalf("%s: %d registered, reference %d", label, got, len(names))
	}
	var out strings.Builder
	qrng := rand.New(rand.NewPCG(99, 7)) // the same queries in every mode
	saved := rf.rng
	rf.rng = qrng
	defer func() { rf.rng = saved }()
	fixed := []string{"connectivity.connected:true", "connectivity.connected:false", "connectivity.disconnectReason:SERVER_INITIATED_DISCONNECT",
		"connectivity.timestamp:*", "shadow.hasDelta:true", "shadow.deltaAgeSeconds>600", "thingGroupNames:eu", "thingGroupNames:eu-old", "*"}
	for i := range n + len(fixed) {
		qs := ""
		if i < len(fixed) {
			qs = fixed[i]
		} else {
			qs = rf.query(0)
		}
		q, err := query.Parse(qs)
		if err != nil {
			continue // a literal of the wrong type for a typed field
		}
		var want []string
		for _, name := range names {
			if q.Match(recs[name]) {
				want = append(want, name)
			}
		}
		if got := rf.reg.Count(q); got != uint64(len(want)) {
			rf.t.Fatalf("%s: Count(%s) = %d, reference %d %v", label, qs, got, len(want), want)
		}
		var got []string
		limit := 1 + qrng.IntN(7)
		after := ""
		for pages := 0; ; pages++ {
			res := rf.reg.Search(q, after, limit)
			if res.Total != uint64(len(want)) || len(res.Things) > limit || pages > len(want)+1 {
				rf.t.Fatalf("%s: Search(%s, %q, %d) = %+v, reference total %d", label, qs, after, limit, res, len(want))
			}
			got = append(got, res.Things...)
			if res.NextToken == "" {
				break
			}
			after = res.NextToken
		}
		if !slices.Equal(got, want) {
			rf.t.Fatalf("%s: Search(%s) = %v, reference %v", label, qs, got, want)
		}
		for _, name := range names {
			if rf.reg.MatchThing(q, name) != q.Match(recs[name]) {
				rf.t.Fatalf("%s: MatchThing(%s, %s) = %v, reference %v", label, qs, name, !q.Match(recs[name]), q.Match(recs[name]))
			}
		}
		fmt.Fprintf(&out, "%s => %v\n", qs, got)
	}
	// Every registered name, as written and in other cases (an exact
	// lookup in the index, not a comparison of every name).
	for _, name := range names {
		for _, v := range []string{name, strings.ToUpper(name), strings.ToLower(name)} {
			q := query.MustParse("thingName:" + strconv.Quote(v))
			var want []string
			for _, n := range names {
				if q.Match(recs[n]) {
					want = append(want, n)
				}
			}
			if got := rf.reg.Search(q, "", 100).Things; !slices.Equal(got, want) {
				rf.t.Fatalf("%s: Search(%s) = %v, reference %v", label, q.Source, got, want)
			}
		}
	}
	for _, name := range names {
		got := rf.reg.ThingGroups(name)
		want := make([]string, 0)
		for _, v := range recs[name].Values("thingGroupNames") {
			want = append(want, v.S)
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			rf.t.Fatalf("%s: ThingGroups(%s) = %v, reference %v", label, name, got, want)
		}
		fmt.Fprintf(&out, "groups %s => %v\n", name, got)
	}
	all := query.MustParse("*")
	for _, field := range []string{"attributes.ring", "shadow.reported.fw", "attributes.location"} {
		buckets, total := rf.reg.Buckets(all, field, 0)
		got := map[string]uint64{}
		for _, b := range buckets {
			got[strings.ToLower(b.Value)] += b.Count
		}
		want := map[string]uint64{}
		for _, name := range names {
			seen := map[string]bool{}
			for _, v := range recs[name].vals[field] {
				if k := strings.ToLower(v.S); !seen[k] {
					seen[k] = true
					want[k]++
				}
			}
		}
		if total != uint64(len(names)) || fmt.Sprint(got) != fmt.Sprint(want) {
			rf.t.Fatalf("%s: Buckets(%s) = %v (total %d), reference %v (%d)", label, field, got, total, want, len(names))
		}
		fmt.Fprintf(&out, "buckets %s => %v\n", field, got)
	}
	return out.String()
}

// TestIndexMatchesAReferenceEvaluation builds random fleets and compares
// every answer of the index (counts, pages, single-thing matches, groups,
// buckets) with a plain evaluation of the query over each thing's values,
// on the index as built live, as loaded from its snapshot, as rebuilt
// when the snapshot is missing, corrupt or stale, and after live changes
// on a loaded index.
func TestIndexMatchesAReferenceEvaluation(t *testing.T) {
	seeds := 6
	if testing.Short() {
		seeds = 2
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rf := newRandFleet(t, seed)
			for range 400 {
				rf.step()
			}
			rf.check(150, "live")

			// Devices still connected when the snapshot is written are
			// disconnected at the next start (as in a rebuild): the answers
			// are compared with the reference, not with the live ones.
			rf.close(true)
			rf.open()
			if src := rf.reg.IndexSource(); src != "snapshot" {
				t.Fatalf("after a clean close the index came from %q, want the snapshot", src)
			}
			rf.check(150, "from snapshot")

			// Live changes on a loaded index, then a snapshot of that.
			for range 200 {
				rf.step()
			}
			rf.check(150, "changed after load")
			rf.close(true)
			rf.open()
			if src := rf.reg.IndexSource(); src != "snapshot" {
				t.Fatalf("second snapshot: index from %q", src)
			}
			// Nobody is connected from here on: every way of opening the
			// same store answers the same.
			changed := rf.check(150, "second snapshot")

			// Missing snapshot: rebuilt from the store.
			rf.close(true)
			if err := os.Remove(snapshotPath(rf.dir)); err != nil {
				t.Fatal(err)
			}
			rf.open()
			if src := rf.reg.IndexSource(); !strings.HasPrefix(src, "rebuilt") {
				t.Fatalf("without a snapshot the index came from %q", src)
			}
			if got := rf.check(150, "rebuilt (missing)"); got != changed {
				t.Fatalf("answers differ after a rebuild")
			}

			// Corrupt snapshot: every byte position class (header, body, end).
			rf.close(true)
			b, err := os.ReadFile(snapshotPath(rf.dir))
			if err != nil {
				t.Fatal(err)
			}
			for _, pos := range []int{3, len(b) / 2, len(b) - 1} {
				bad := slices.Clone(b)
				bad[pos] ^= 0x40
				if err := os.WriteFile(snapshotPath(rf.dir), bad, 0o600); err != nil {
					t.Fatal(err)
				}
				rf.open()
				if src := rf.reg.IndexSource(); !strings.HasPrefix(src, "rebuilt") {
					t.Fatalf("a snapshot with byte %d flipped was used (%q)", pos, src)
				}
				if got := rf.check(150, fmt.Sprintf("rebuilt (corrupt at %d)", pos)); got != changed {
					t.Fatalf("answers differ after a rebuild from a corrupt snapshot")
				}
				rf.close(false)
			}
			if err := os.WriteFile(snapshotPath(rf.dir), b[:len(b)/3], 0o600); err != nil {
				t.Fatal(err)
			}
			rf.open()
			if src := rf.reg.IndexSource(); !strings.HasPrefix(src, "rebuilt") {
				t.Fatalf("a truncated snapshot was used (%q)", src)
			}
			rf.close(true)

			// Stale snapshot: the store changes while no snapshot is saved
			// (a crash, or a registry run without snapshots).
			rf.openWith("")
			for range 100 {
				rf.step()
			}
			rf.close(false)
			rf.open()
			if src := rf.reg.IndexSource(); !strings.HasPrefix(src, "rebuilt") {
				t.Fatalf("a stale snapshot was used (%q)", src)
			}
			stale := rf.check(150, "rebuilt (stale)")
			rf.close(false)
			rf.openWith("") // no snapshot at all: the plain rebuild
			if got := rf.check(150, "plain rebuild"); got != stale {
				t.Fatalf("a rebuild after a stale snapshot differs from a plain rebuild")
			}
			rf.close(false)
		})
	}
}
