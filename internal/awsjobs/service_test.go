package awsjobs_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/awsjobs"
	"github.com/umbra-iot/umbra/internal/fakeclock"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
)

type published struct {
	mu   sync.Mutex
	msgs map[string][]string
}

func (p *published) Publish(topic string, b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs[topic] = append(p.msgs[topic], string(b))
	return nil
}

func (p *published) last(topic string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msgs[topic]
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

func open(t *testing.T, modify func(*awsjobs.Config)) (*awsjobs.Service, *published, *fakeclock.Clock) {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	pub := &published{msgs: map[string][]string{}}
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	cfg := awsjobs.Config{Store: storeadapt.KV{DB: db}, Publisher: pub, Clock: clock.Now}
	if modify != nil {
		modify(&cfg)
	}
	s, err := awsjobs.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub, clock
}

// Request validation: each malformed request gets AWS's error code, with
// the client token echoed when it is a string.
func TestRequestValidation(t *testing.T) {
	s, pub, _ := open(t, nil)
	ctx := context.Background()
	if err := s.PutJob(ctx, "j1", []byte(`{"op":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Queue(ctx, "j1", "t1"); err != nil {
		t.Fatal(err)
	}
	p := "$aws/things/t1/jobs/"
	for _, c := range []struct{ topic, payload, code string }{
		{p + "j1/update", `{"status":"DONE","clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","statusDetails":{"bad key":"v"},"clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","statusDetails":{"k":""},"clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","statusDetails":{"k":5},"clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":0,"clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":10081,"clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","expectedVersion":"one","clientToken":"a"}`, "InvalidRequest"},
		{p + "j1/update", `{"status":"IN_PROGRESS","executionNumber":2,"clientToken":"a"}`, "ResourceNotFound"},
		{p + "j1/update", `{"status":"IN_PROGRESS","expectedVersion":7,"clientToken":"a"}`, "VersionMismatch"},
		{p + "j1/get", `{"executionNumber":9,"clientToken":"a"}`, "ResourceNotFound"},
		{p + "j1/get", `{"includeJobDocument":"yes","clientToken":"a"}`, "InvalidRequest"},
		{p + "$next/update", `{"status":"SUCCEEDED","clientToken":"a"}`, "InvalidTopic"},
		{p + "bad.id/get", `{"clientToken":"a"}`, "InvalidTopic"},
		{p + "a/b/c", `{"clientToken":"a"}`, "InvalidTopic"},
		{p + "get", `[1,2]`, "InvalidRequest"},
		{p + "get", "\xff\xfe", "InvalidJson"},
		{p + "start-next", `{"stepTimeoutInMinutes":-2,"clientToken":"a"}`, "InvalidRequest"},
		{p + "get", `{"clientToken":5}`, "InvalidRequest"},
	} {
		handled, accepted := s.HandleMQTT(ctx, c.topic, []byte(c.payload))
		if !handled || accepted {
			t.Errorf("%s %s: handled %v accepted %v, want a rejection", c.topic, c.payload, handled, accepted)
			continue
		}
		got := pub.last(c.topic + "/rejected")
		if gjson.Get(got, "code").String() != c.code {
			t.Errorf("%s %s: %s, want code %s", c.topic, c.payload, got, c.code)
		}
		if gjson.Get(c.payload, "clientToken").Type == gjson.String && gjson.Get(got, "clientToken").String() != "a" {
			t.Errorf("%s %s: clientToken not echoed: %s", c.topic, c.payload, got)
		}
	}
	// Nothing changed the execution; a NUL-terminated request (C clients)
	// and an empty payload are fine.
	if e, _ := s.Get("t1", "j1"); e.Status != awsjobs.Queued || e.VersionNumber != 1 {
		t.Fatalf("execution after rejected requests: %+v", e)
	}
	if _, ok := s.HandleMQTT(ctx, p+"j1/update", []byte("{\"status\":\"IN_PROGRESS\",\"expectedVersion\":1}\x00")); !ok {
		t.Fatalf("NUL-terminated update rejected: %s", pub.last(p+"j1/update/rejected"))
	}
	if _, ok := s.HandleMQTT(ctx, p+"get", nil); !ok {
		t.Fatal("empty get rejected")
	}
	// Reply and notification topics are not requests.
	for _, topic := range []string{p + "get/accepted", p + "notify", p + "notify-next", p + "j1/update/rejected", "$aws/things/t1/shadow/get"} {
		if handled, _ := s.HandleMQTT(ctx, topic, []byte(`{}`)); handled {
			t.Errorf("%s handled as a request", topic)
		}
	}
	if err := s.PutJob(ctx, "j2", []byte(`[1]`)); err == nil {
		t.Error("a non-object document accepted")
	}
	if err := s.PutJob(ctx, "j2", []byte(fmt.Sprintf(`{"a":%q}`, make([]byte, awsjobs.MaxDocument)))); err == nil {
		t.Error("a document over 32 KB accepted")
	}
}

// A thing over its request rate gets RequestThrottled.
func TestRequestThrottled(t *testing.T) {
	s, pub, _ := open(t, func(c *awsjobs.Config) { c.Rate, c.Burst = 0.001, 2 })
	ctx := context.Background()
	for i := range 3 {
		_, ok := s.HandleMQTT(ctx, "$aws/things/t1/jobs/get", []byte(`{"clientToken":"x"}`))
		if want := i < 2; ok != want {
			t.Fatalf("request %d accepted %v, want %v", i, ok, want)
		}
	}
	if got := pub.last("$aws/things/t1/jobs/get/rejected"); gjson.Get(got, "code").String() != "RequestThrottled" {
		t.Fatalf("third request: %s", got)
	}
	if _, ok := s.HandleMQTT(ctx, "$aws/things/t2/jobs/get", nil); !ok {
		t.Fatal("another thing throttled")
	}
}

// The step timer: -1 clears it, a new value replaces it, expiry times the
// execution out.
func TestStepTimer(t *testing.T) {
	s, _, clock := open(t, nil)
	ctx := context.Background()
	_ = s.PutJob(ctx, "j1", []byte(`{}`))
	_, _ = s.Queue(ctx, "j1", "t1")
	p := "$aws/things/t1/jobs/j1/update"
	s.HandleMQTT(ctx, p, []byte(`{"status":"IN_PROGRESS","stepTimeoutInMinutes":1}`))
	s.HandleMQTT(ctx, p, []byte(`{"status":"IN_PROGRESS","stepTimeoutInMinutes":-1}`))
	clock.Add(2 * time.Minute)
	s.Step(ctx)
	if e, _ := s.Get("t1", "j1"); e.Status != awsjobs.InProgress {
		t.Fatalf("cleared timer still fired: %+v", e)
	}
	s.HandleMQTT(ctx, p, []byte(`{"status":"IN_PROGRESS","stepTimeoutInMinutes":5}`))
	clock.Add(4 * time.Minute)
	s.Step(ctx)
	if e, _ := s.Get("t1", "j1"); e.Status != awsjobs.InProgress {
		t.Fatalf("timed out early: %+v", e)
	}
	clock.Add(time.Minute)
	s.Step(ctx)
	if e, _ := s.Get("t1", "j1"); e.Status != awsjobs.TimedOut || e.VersionNumber != 5 {
		t.Fatalf("after the step timer: %+v", e)
	}
}

// A job document reaches the device as it was written: keys in their order,
// numbers as written, "&" unescaped; the reply's timestamp and clientToken
// come after the reply's own fields.
func TestReplyKeepsTheJobDocumentAsWritten(t *testing.T) {
	s, pub, _ := open(t, nil)
	ctx := context.Background()
	doc := `{"zeta":1,"alpha":{"b":2.50,"a":100000000000000000001},"url":"https://fw.example/x?a=1&b=2"}`
	if err := s.PutJob(ctx, "j1", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Queue(ctx, "j1", "t1"); err != nil {
		t.Fatal(err)
	}
	s.HandleMQTT(ctx, "$aws/things/t1/jobs/start-next", []byte(`{"clientToken":"ct-1"}`))
	got := pub.last("$aws/things/t1/jobs/start-next/accepted")
	if !strings.Contains(got, `"jobDocument":`+doc) {
		t.Fatalf("job document changed on the way:\n got  %s\n want %s inside", got, doc)
	}
	if !strings.HasSuffix(got, `,"clientToken":"ct-1"}`) || !gjson.Valid(got) || gjson.Get(got, "timestamp").Int() == 0 {
		t.Fatalf("reply %s", got)
	}
}

// A second service on the same store (cluster mode: the node that takes
// over the timers) fires a step timer set through the first only after
// Reload. (A document it reads from the store when first needed.)
func TestReloadPicksUpStepTimers(t *testing.T) {
	var cfg awsjobs.Config
	s, _, clock := open(t, func(c *awsjobs.Config) { cfg = *c })
	standby, err := awsjobs.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_ = s.PutJob(ctx, "j1", []byte(`{"op":"x"}`))
	_, _ = s.Queue(ctx, "j1", "t1")
	s.HandleMQTT(ctx, "$aws/things/t1/jobs/j1/update", []byte(`{"status":"IN_PROGRESS","stepTimeoutInMinutes":1}`))
	clock.Add(2 * time.Minute)
	standby.Step(ctx)
	if e, _ := standby.Get("t1", "j1"); e.Status != awsjobs.InProgress {
		t.Fatalf("standby fired a timer it had not loaded: %+v", e)
	}
	if err := standby.Reload(); err != nil {
		t.Fatal(err)
	}
	if string(standby.Document("j1")) != `{"op":"x"}` {
		t.Fatalf("document after Reload: %s", standby.Document("j1"))
	}
	standby.Step(ctx)
	if e, _ := standby.Get("t1", "j1"); e.Status != awsjobs.TimedOut {
		t.Fatalf("after Reload and the timer: %+v", e)
	}
}

// StoreChanged (cluster mode: another node wrote the record) updates one
// document or one step timer without a full Reload.
func TestStoreChangedFollowsOneRecord(t *testing.T) {
	var cfg awsjobs.Config
	s, _, clock := open(t, func(c *awsjobs.Config) { cfg = *c })
	follower, err := awsjobs.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_ = s.PutJob(ctx, "j1", []byte(`{"op":"y"}`))
	_, _ = s.Queue(ctx, "j1", "t1")
	s.HandleMQTT(ctx, "$aws/things/t1/jobs/j1/update", []byte(`{"status":"IN_PROGRESS","stepTimeoutInMinutes":1}`))
	follower.StoreChanged("job_documents", "j1")
	follower.StoreChanged("job_executions", "t1\x00j1")
	if th, ok := awsjobs.ExecutionThing("job_executions", "t1\x00j1"); !ok || th != "t1" {
		t.Fatalf("ExecutionThing: %q %v", th, ok)
	}
	if string(follower.Document("j1")) != `{"op":"y"}` {
		t.Fatalf("document after StoreChanged: %s", follower.Document("j1"))
	}
	clock.Add(2 * time.Minute)
	follower.Step(ctx)
	if e, _ := follower.Get("t1", "j1"); e.Status != awsjobs.TimedOut {
		t.Fatalf("timer after StoreChanged: %+v", e)
	}
}
