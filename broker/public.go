package broker

import "github.com/umbra-iot/umbra/internal/auth"

// Configuration types of Umbra's internal packages that Options uses,
// re-exported so that a program embedding the broker can fill them in. The
// packages themselves (auth, store, hooks, rollout, …) live under internal/:
// only broker, brokertest, client, shadow and registry are Umbra's API.
type (
	// ServiceConfig is an MQTT service principal (AuthOptions.Services).
	ServiceConfig = auth.ServiceConfig
	// ServiceRules are a service's publish and subscribe grants.
	ServiceRules = auth.Rules
	// APIKeyConfig is an HTTP API key (AuthOptions.APIKeys).
	APIKeyConfig = auth.APIKeyConfig
	// ThrottleConfig limits password guessing (AuthOptions.LoginThrottle).
	ThrottleConfig = auth.ThrottleConfig
	// Role is an API key's role.
	Role = auth.Role
)

// API key roles.
const (
	RoleViewer   = auth.RoleViewer
	RoleOperator = auth.RoleOperator
	RoleAdmin    = auth.RoleAdmin
)

// APIKeyHash is the form in which an API key is configured
// (APIKeyConfig.SHA256): the hex SHA-256 of the key.
func APIKeyHash(key string) string { return auth.SHA256Hex(key) }
