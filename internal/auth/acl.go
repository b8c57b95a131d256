package auth

import (
	"strings"
)

// Kind is the kind of an authenticated MQTT identity.
type Kind int

const (
	// Anonymous is a client of a broker with authentication off: it may
	// do anything (the broker then listens on loopback only).
	Anonymous Kind = iota
	// Device is a thing; Name is the thing name, equal to its client id.
	Device
	// Service is an app or backend principal from the configuration.
	Service
	// Unauthenticated holds no proven identity and may do nothing (see
	// Nobody).
	Unauthenticated
)

func (k Kind) String() string {
	switch k {
	case Device:
		return "device"
	case Service:
		return "service"
	case Unauthenticated:
		return "unauthenticated"
	}
	return "anonymous"
}

// Identity is who an MQTT client authenticated as.
type Identity struct {
	Kind     Kind
	Name     string // thing name or service name
	ClientID string
	Username string
	// Method says how the identity was proven: "certificate", "secret",
	// "password" or "none".
	Method string
	// ClientIDAssigned says the broker made up ClientID because the client
	// sent none: such a client is a tool or an app, never a thing.
	ClientIDAssigned bool
}

// IsDevice reports whether the identity is a thing.
func (id Identity) IsDevice() bool { return id.Kind == Device }

// Principal names the identity in logs and shadow history.
func (id Identity) Principal() string {
	switch id.Kind {
	case Device:
		return id.Name
	case Service:
		return "service:" + id.Name + "/" + id.ClientID
	case Unauthenticated:
		return "unauthenticated:" + id.ClientID
	}
	return id.ClientID
}

// Rules are the topic grants of a service principal. Filters may contain
// {clientid} and {username}, replaced by the connecting client's values.
type Rules struct {
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

// CanPublish reports whether id may publish to topic.
func (p *Policy) CanPublish(id Identity, topic string) bool {
	switch id.Kind {
	case Anonymous:
		return true
	case Device:
		return devicePublish(id.Name, topic)
	case Service:
		svc, ok := p.services[id.Name]
		return ok && anyGrant(svc.Rules.Publish, id, func(g string) bool { return Match(g, topic) })
	}
	return false
}

// CanReceive reports whether id may subscribe to filter, or receive a
// message on topic (a topic name is a filter without wildcards, so the same
// check serves Mochi's subscribe-time and delivery-time calls).
func (p *Policy) CanReceive(id Identity, filter string) bool {
	switch id.Kind {
	case Anonymous:
		return true
	case Device:
		return deviceReceive(id.Name, filter)
	case Service:
		svc, ok := p.services[id.Name]
		if !ok {
			return false
		}
		f, _ := SharedFilter(filter) // services may share subscriptions
		return anyGrant(svc.Rules.Subscribe, id, func(g string) bool { return Covers(g, f) })
	}
	return false
}

// anyGrant substitutes each grant for id and reports whether ok accepts one.
// A client id or username that is not a single plain topic level grants
// nothing through a placeholder, so no one can widen a rule by choosing
// "+" or "a/b" as their id.
func anyGrant(grants []string, id Identity, ok func(string) bool) bool {
	for _, g := range grants {
		if strings.Contains(g, "{clientid}") {
			if !plainLevel(id.ClientID) {
				continue
			}
			g = strings.ReplaceAll(g, "{clientid}", id.ClientID)
		}
		if strings.Contains(g, "{username}") {
			if !plainLevel(id.Username) {
				continue
			}
			g = strings.ReplaceAll(g, "{username}", id.Username)
		}
		if ok(g) {
			return true
		}
	}
	return false
}

func plainLevel(s string) bool { return s != "" && !strings.ContainsAny(s, "/+#\x00") }

// DeviceNamespace is the application topic namespace of a thing, beside
// its $aws shadow topics: things/{thing}/...
const DeviceNamespace = "things/"

// devicePublish: a device publishes only its own shadow requests
// ($aws/things/{own}/shadow[/name/{n}]/{get,update,delete}), its own AWS IoT
// Jobs requests ($aws/things/{own}/jobs/{get,start-next,{jobId}/get,
// {jobId}/update}) and its own
// application topics (things/{own}/...). Never a reply topic.
func devicePublish(thing, topic string) bool {
	if rest, ok := strings.CutPrefix(topic, DeviceNamespace+thing+"/"); ok {
		return rest != ""
	}
	if rest, ok := strings.CutPrefix(topic, "$aws/things/"+thing+"/jobs/"); ok {
		return deviceJobsRequest(rest)
	}
	rest, ok := strings.CutPrefix(topic, "$aws/things/"+thing+"/shadow/")
	if !ok {
		return false
	}
	if named, ok := strings.CutPrefix(rest, "name/"); ok {
		name, op, found := strings.Cut(named, "/")
		if !found || name == "" || strings.ContainsAny(name, "+#") {
			return false
		}
		rest = op
	}
	return rest == "get" || rest == "update" || rest == "delete"
}

// deviceReceive: a device subscribes within its own $aws/things/{own}/ and
// things/{own}/ trees; no wildcard at or above its thing level, no '#', no
// shared subscription.
func deviceReceive(thing, filter string) bool {
	if strings.HasPrefix(filter, "$share/") || !plainLevel(thing) {
		return false
	}
	return Covers("$aws/things/"+thing+"/#", filter) || Covers(DeviceNamespace+thing+"/#", filter)
}

// deviceJobsRequest: the part after $aws/things/{own}/jobs/ of a jobs
// request (never a reply or notification topic).
func deviceJobsRequest(rest string) bool {
	job, op, two := strings.Cut(rest, "/")
	if !two {
		return rest == "get" || rest == "start-next"
	}
	return job != "" && !strings.ContainsAny(job, "+#") && (op == "get" || op == "update")
}
