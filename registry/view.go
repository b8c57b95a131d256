package registry

// ThingView is a thing as the API answers it (GET /api/things/{thing} and
// the other thing routes): the registry's record with the thing's groups
// and its live connectivity. The server writes it and clients read it.
type ThingView struct {
	Thing
	Groups       []string      `json:"thingGroupNames"`
	Connectivity *Connectivity `json:"connectivity,omitempty"`
}
