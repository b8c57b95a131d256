package broker

import (
	"net/http"

	"github.com/umbra-iot/umbra/api"
)

// routes registers the REST API on the HTTP listener.
func (b *Broker) routes(mux *http.ServeMux) {
	(&api.ShadowAPI{Shadows: b.shadows, Lister: shadowLister{b.db}}).Register(mux)
}
