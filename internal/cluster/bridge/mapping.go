package bridge

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsupportedTopic is returned for topics and filters that have no NATS
// subject: whitespace and DEL cannot appear in a subject (nats-server
// refuses them in MQTT topics for the same reason).
var ErrUnsupportedTopic = errors.New("bridge: topic contains whitespace or DEL, which NATS subjects cannot carry")

// TopicToSubject maps an MQTT topic name (no wildcards) to the NATS subject
// nats-server's MQTT support publishes it on (mqttTopicToNATSPubSubject).
func TopicToSubject(topic string) (string, error) { return toSubject(topic, false) }

// FilterToSubject maps an MQTT topic filter to the NATS subject
// nats-server's MQTT support subscribes to (mqttFilterToNATSSubject): '+'
// becomes '*' and '#' becomes '>'. A filter ending in "/#" also matches its
// parent level in MQTT, which '>' does not: see FilterSubjects.
func FilterToSubject(filter string) (string, error) { return toSubject(filter, true) }

// FilterSubjects is every subject a subscription to filter needs: the
// mapped subject and, for "x/#", the parent "x" too (nats-server does the
// same: mqttNeedSubForLevelUp). The parent is mapped as a topic of its own,
// so "/#" needs no second subject (its parent would be the empty topic;
// nats-server subscribes "/" there, which no valid topic maps to).
func FilterSubjects(filter string) ([]string, error) {
	s, err := FilterToSubject(filter)
	if err != nil {
		return nil, err
	}
	out := []string{s}
	if parent, ok := strings.CutSuffix(filter, "/#"); ok && parent != "" {
		p, err := FilterToSubject(parent)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// toSubject is nats-server v2.15.3's mqttToNATSSubjectConversion:
//   - '/' is '/.' when it is the first character,
//   - './' when it is the last one or followed by another '/' (foo//bar is
//     foo./.bar),
//   - '.' otherwise;
//   - '.' is '//';
//   - '+' is '*' and '#' is '>' (filters only);
//   - whitespace and DEL are refused;
//   - a subject that would end in '.' gets a '/' appended.
func toSubject(mt string, wcOK bool) (string, error) {
	res := make([]byte, 0, len(mt)+4)
	end := len(mt) - 1
	for i := 0; i < len(mt); i++ {
		switch c := mt[i]; c {
		case '/':
			switch {
			case i == 0 || res[len(res)-1] == '.':
				res = append(res, '/', '.')
			case i == end || mt[i+1] == '/':
				res = append(res, '.', '/')
			default:
				res = append(res, '.')
			}
		case ' ', '\t', '\n', '\r', '\f', 0x7f:
			return "", ErrUnsupportedTopic
		case '.':
			res = append(res, '/', '/')
		case '+', '#':
			if !wcOK {
				return "", fmt.Errorf("bridge: wildcards not allowed in a topic name: %q", mt)
			}
			if c == '+' {
				res = append(res, '*')
			} else {
				res = append(res, '>')
			}
		default:
			res = append(res, c)
		}
	}
	if len(res) > 0 && res[len(res)-1] == '.' {
		res = append(res, '/')
	}
	return string(res), nil
}

// SubjectToTopic maps a NATS subject back to the MQTT topic
// (natsSubjectToMQTTTopic): '.' is '/', "//" is '.', "/." is '/' and a '/'
// before anything else is dropped.
func SubjectToTopic(subject string) string {
	topic := make([]byte, 0, len(subject))
	end := len(subject) - 1
	for i := 0; i < len(subject); i++ {
		switch subject[i] {
		case '/':
			if i < end {
				switch subject[i+1] {
				case '.':
					topic = append(topic, '/')
					i++
				case '/':
					topic = append(topic, '.')
					i++
				}
			}
		case '.':
			topic = append(topic, '/')
		default:
			topic = append(topic, subject[i])
		}
	}
	return string(topic)
}

// splitShared splits "$share/group/filter" (the prefix in any case, as
// Mochi accepts it) into group and filter; ok is false for other filters.
func splitShared(filter string) (group, inner string, ok bool) {
	if len(filter) < 7 || !strings.EqualFold(filter[:7], "$share/") {
		return "", "", false
	}
	group, inner, ok = strings.Cut(filter[7:], "/")
	return group, inner, ok && group != "" && inner != ""
}

// matches reports whether an MQTT topic name matches a (non-shared) MQTT
// filter, with [MQTT-4.7.2-1]: a filter starting with a wildcard does not
// match a topic starting with '$'.
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a": the rest of the filter is only "#".
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
