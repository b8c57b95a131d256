package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// ClientCertMode says whether a TLS listener asks clients for a certificate.
//
// A listener that asks (required or optional) sends a TLS CertificateRequest
// in every handshake. TLS stacks from before early 2024 (s2n inside awscrt
// 0.2x and older) abort the handshake when asked and they have no
// certificate, so username/password devices and services on such SDKs need a
// listener with ClientCertsNone: typically a second TLS listener (see
// Options.Listeners) next to the one for certificate devices.
type ClientCertMode string

const (
	// ClientCertsDefault is ClientCertsOptional when a client CA is
	// configured (ClientCertsRequired with RequireClientCert), else
	// ClientCertsNone: Umbra's behaviour before the modes existed.
	ClientCertsDefault ClientCertMode = ""
	// ClientCertsRequired asks for a certificate and refuses the handshake
	// without one signed by the client CA.
	ClientCertsRequired ClientCertMode = "required"
	// ClientCertsOptional asks for a certificate and verifies it if one is
	// given; clients without one go on and authenticate otherwise.
	ClientCertsOptional ClientCertMode = "optional"
	// ClientCertsNone never asks: no CertificateRequest is sent, and
	// clients authenticate with a device secret or service password.
	ClientCertsNone ClientCertMode = "none"
)

func (m ClientCertMode) valid() bool {
	switch m {
	case ClientCertsDefault, ClientCertsRequired, ClientCertsOptional, ClientCertsNone:
		return true
	}
	return false
}

// ListenerOptions is a further MQTT listener beyond MQTTAddr and WSAddr:
// for instance a second TLS listener that does not request client
// certificates, for password-authenticated clients on old TLS stacks. It
// uses TLS when TLS is configured (Options.TLS), plain TCP otherwise.
type ListenerOptions struct {
	// Name identifies the listener in logs and in Broker.ListenerAddr;
	// unique, and not "mqtt" or "ws".
	Name string
	// Addr is host:port (port 0 picks a free port).
	Addr string
	// WebSocket serves MQTT over WebSocket instead of TCP.
	WebSocket bool
	// ClientCerts is this listener's client-certificate mode; "" means
	// TLS.ClientCerts.
	ClientCerts ClientCertMode
}

// mode resolves m ("" meaning the options' default) to a concrete mode.
func (t TLSOptions) mode(m ClientCertMode) ClientCertMode {
	if m == ClientCertsDefault {
		m = t.ClientCerts
	}
	if m != ClientCertsDefault {
		return m
	}
	return t.legacyMode()
}

// legacyMode is the mode before per-listener modes existed, and still the
// HTTP listener's: the API authenticates with API keys, never certificates,
// so tls.client_certs does not apply to it.
func (t TLSOptions) legacyMode() ClientCertMode {
	switch {
	case t.RequireClientCert:
		return ClientCertsRequired
	case t.ClientCAFile != "":
		return ClientCertsOptional
	}
	return ClientCertsNone
}

// checkModes reports client-certificate modes that cannot work.
func (t TLSOptions) checkModes(extra []ListenerOptions) error {
	var errs []error
	check := func(what string, m ClientCertMode) {
		if !m.valid() {
			errs = append(errs, fmt.Errorf("tls: %s client_certs %q: want required, optional or none", what, m))
			return
		}
		if r := t.mode(m); r != ClientCertsNone && (t.ClientCAFile == "" || !t.enabled()) {
			errs = append(errs, fmt.Errorf("tls: %s client_certs %q needs a server certificate and client_ca_file", what, r))
		}
	}
	if t.ClientCerts != ClientCertsDefault {
		check("the mqtt listener's", t.ClientCerts)
		if t.RequireClientCert && t.ClientCerts != ClientCertsRequired {
			errs = append(errs, fmt.Errorf("tls: require_client_cert contradicts client_certs %q", t.ClientCerts))
		}
	}
	if t.WSClientCerts != ClientCertsDefault {
		check("the websocket listener's", t.WSClientCerts)
	}
	for _, l := range extra {
		if l.ClientCerts != ClientCertsDefault {
			check("listener "+l.Name+"'s", l.ClientCerts)
		}
	}
	return errors.Join(errs...)
}

// tlsFor is base (the server certificate and client CAs) with the client
// authentication of mode m ("" meaning ClientCerts); nil when TLS is off.
func (t TLSOptions) tlsFor(base *tls.Config, m ClientCertMode) *tls.Config {
	return withMode(base, t.mode(m))
}

func withMode(base *tls.Config, m ClientCertMode) *tls.Config {
	if base == nil {
		return nil
	}
	c := base.Clone()
	switch m {
	case ClientCertsRequired:
		c.ClientAuth = tls.RequireAndVerifyClientCert
	case ClientCertsOptional:
		c.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		// No CertificateRequest is sent (ClientCAs stay, unused, so a
		// listener derived from this one can still ask).
		c.ClientAuth = tls.NoClientCert
	}
	return c
}

// checkListeners validates Options.Listeners.
func checkListeners(ls []ListenerOptions) error {
	var errs []error
	seen := map[string]bool{"mqtt": true, "ws": true}
	for i, l := range ls {
		if l.Name == "" {
			errs = append(errs, fmt.Errorf("listener %d: name is required", i))
		} else if seen[l.Name] {
			errs = append(errs, fmt.Errorf("listener %q: name already used", l.Name))
		}
		seen[l.Name] = true
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			errs = append(errs, fmt.Errorf("listener %q address %q: %w", l.Name, l.Addr, err))
		}
	}
	return errors.Join(errs...)
}

// extraListener is a bound Options.Listeners entry.
type extraListener struct {
	name string
	ln   net.Listener
}

// bindExtra binds Options.Listeners and adds them to Mochi.
func (b *Broker) bindExtra() error {
	for _, l := range b.opts.Listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			return fmt.Errorf("listener %s on %s: %w", l.Name, l.Addr, err)
		}
		b.extra = append(b.extra, extraListener{name: l.Name, ln: ln})
		ln = b.watch(l.Name, ln) // survives temporary accept errors
		conf := b.opts.TLS.tlsFor(b.tlsConf, l.ClientCerts)
		if l.WebSocket {
			err = b.mqtt.AddListener(b.newWS(l.Name, ln, conf))
		} else {
			err = b.mqtt.AddListener(&tcpListener{id: l.Name, ln: ln, tls: conf, connectTimeout: b.opts.ConnectTimeout,
				log: b.log, limit: b.conns, writeTimeout: b.opts.WriteTimeout})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ListenerAddr is the bound address of the Options.Listeners entry named
// name ("" when there is none or the broker has not started).
func (b *Broker) ListenerAddr(name string) string {
	for _, l := range b.extra {
		if l.name == name {
			return l.ln.Addr().String()
		}
	}
	return ""
}
