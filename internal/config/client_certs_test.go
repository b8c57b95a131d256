package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/umbra-iot/umbra/broker"
)

func TestTLSClientCertModesAndListeners(t *testing.T) {
	f, err := Decode(strings.NewReader(`
mqtt:
  listeners:
    - name: mqtts-passwords
      addr: 0.0.0.0:8884
      client_certs: none
    - name: wss-passwords
      addr: 0.0.0.0:8444
      websocket: true
tls:
  client_ca_file: /etc/umbra/ca.pem
  client_certs: required
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(&f, []string{"UMBRA_TLS_WS_CLIENT_CERTS=optional"}); err != nil {
		t.Fatal(err)
	}
	o := f.Options()
	if o.TLS.ClientCerts != broker.ClientCertsRequired || o.TLS.WSClientCerts != broker.ClientCertsOptional {
		t.Fatalf("tls: %+v", o.TLS)
	}
	want := []broker.ListenerOptions{
		{Name: "mqtts-passwords", Addr: "0.0.0.0:8884", ClientCerts: broker.ClientCertsNone},
		{Name: "wss-passwords", Addr: "0.0.0.0:8444", WebSocket: true},
	}
	if !reflect.DeepEqual(o.Listeners, want) {
		t.Fatalf("listeners %+v, want %+v", o.Listeners, want)
	}
}
