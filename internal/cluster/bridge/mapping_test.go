package bridge

import (
	"slices"
	"testing"
)

// The cases are nats-server v2.15.3's own (server/mqtt_test.go,
// TestMQTTTopicAndSubjectConversion and TestMQTTFilterConversion): the
// subject nats-server's MQTT support uses for each topic and filter, and
// the topic it maps the subject back to. Umbra must agree, so that NATS
// services see device traffic where nats-server would put it.
func TestTopicToSubjectAsNATSServer(t *testing.T) {
	for _, c := range []struct{ topic, subject string }{
		{"/", "/./"},
		{"//", "/././"},
		{"///", "/./././"},
		{"////", "/././././"},
		{"foo", "foo"},
		{"/foo", "/.foo"},
		{"//foo", "/./.foo"},
		{"///foo", "/././.foo"},
		{"///foo/", "/././.foo./"},
		{"///foo//", "/././.foo././"},
		{"///foo///", "/././.foo./././"},
		{"//.foo.//", "/././/foo//././"},
		{"foo/bar", "foo.bar"},
		{"/foo/bar", "/.foo.bar"},
		{"/foo/bar/", "/.foo.bar./"},
		{"foo/bar/baz", "foo.bar.baz"},
		{"/foo/bar/baz", "/.foo.bar.baz"},
		{"/foo/bar/baz/", "/.foo.bar.baz./"},
		{"bar/", "bar./"},
		{"bar//", "bar././"},
		{"bar///", "bar./././"},
		{"foo//bar", "foo./.bar"},
		{"foo///bar", "foo././.bar"},
		{"foo////bar", "foo./././.bar"},
		{".", "//"},
		{"..", "////"},
		{"...", "//////"},
		{"./", "//./"},
		{".//.", "//././/"},
		{"././.", "//.//.//"},
		{"././/.", "//.//././/"},
		{".foo", "//foo"},
		{"foo.", "foo//"},
		{".foo.", "//foo//"},
		{"foo../bar/", "foo////.bar./"},
		{"foo../bar/.", "foo////.bar.//"},
		{"/foo/", "/.foo./"},
		{"./foo/.", "//.foo.//"},
		{"foo.bar/baz", "foo//bar.baz"},
		// Umbra's own topics.
		{"$aws/things/lamp/shadow/update/delta", "$aws.things.lamp.shadow.update.delta"},
		{"$aws/things/lamp.v2/jobs/notify", "$aws.things.lamp//v2.jobs.notify"},
		{"devices/x/cmd", "devices.x.cmd"},
	} {
		got, err := TopicToSubject(c.topic)
		if err != nil || got != c.subject {
			t.Errorf("TopicToSubject(%q) = %q, %v; want %q", c.topic, got, err, c.subject)
		}
		if back := SubjectToTopic(got); back != c.topic {
			t.Errorf("SubjectToTopic(%q) = %q; want %q", got, back, c.topic)
		}
	}
	for _, bad := range []string{"foo/+", "foo/#", "foo bar", "foo\x7fbar", "a\tb"} {
		if s, err := TopicToSubject(bad); err == nil {
			t.Errorf("TopicToSubject(%q) = %q; want an error", bad, s)
		}
	}
}

func TestFilterToSubjectAsNATSServer(t *testing.T) {
	for _, c := range []struct{ filter, subject string }{} {
		got, err := FilterToSubject(c.filter)
		if err != nil || got != c.subject {
			t.Errorf("FilterToSubject(%q) = %q, %v; want %q", c.filter, got, err, c.subject)
		}
	}
	// "x/#" matches "x" in MQTT; '>' needs at least one more token, so the
	// parent is subscribed too (nats-server: mqttNeedSubForLevelUp).
	for f, want := range map[string][]string{
		"foo/#":     {"foo.>", "foo"},
		"#":         {">"},
		"foo/+":     {"foo.*"},
		"/#":        {"/.>"},
		"foo//#":    {"foo./.>", "foo./"},
		"a.b/c/#":   {"a//b.c.>", "a//b.c"},
		"$aws/#":    {"$aws.>", "$aws"},
		"plain/top": {"plain.top"},
	} {
		got, err := FilterSubjects(f)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("FilterSubjects(%q) = %q, %v; want %q", f, got, err, want)
		}
	}
	if _, err := FilterToSubject("a b/#"); err == nil {
		t.Error("FilterToSubject with a space: no error")
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a", false},
		{"a/+", "a/b/c", false}, {"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a", true},
		{"#", "$aws/x", false}, {"+/x", "$aws/x", false}, {"$aws/#", "$aws/x", true},
		{"+/+", "/x", true}, {"a//b", "a//b", true}, {"a/+/b", "a//b", true}, {"a", "a/b", false},
	} {
		if got := matches(c.filter, c.topic); got != c.want {
			t.Errorf("matches(%q, %q) = %v", c.filter, c.topic, got)
		}
	}
}

func TestSplitShared(t *testing.T) {
	if g, f, ok := splitShared("$share/g1/a/+/c"); !ok || g != "g1" || f != "a/+/c" {
		t.Errorf("splitShared: %q %q %v", g, f, ok)
	}
	if g, f, ok := splitShared("$SHARE/g/#"); !ok || g != "g" || f != "#" {
		t.Errorf("splitShared upper case: %q %q %v", g, f, ok)
	}
	for _, f := range []string{"a/b", "$share/g", "$share//a", "$shared/g/a"} {
		if _, _, ok := splitShared(f); ok {
			t.Errorf("splitShared(%q) ok", f)
		}
	}
}
