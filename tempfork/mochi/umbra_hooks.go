package mqtt

// Hooks returns the server's hooks, for Umbra code that changes a
// session outside a client's packet flow (cluster mode installs a session
// handed over by another node, or drops one it handed over) and must run
// the same hooks Mochi runs when it does so itself (OnSubscribed,
// OnQosPublish, OnClientExpired, ...). UMBRA PATCH 17.
func (s *Server) Hooks() *Hooks { return s.hooks }
