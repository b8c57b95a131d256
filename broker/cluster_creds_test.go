package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// natsOperator is a NATS server in operator (JWT) mode, as decentralised
// NATS deployments run: accounts signed by an operator, users by their
// account, each user's JWT and seed in a .creds file.
type natsOperator struct {
	url      string
	operator nkeys.KeyPair
	account  nkeys.KeyPair // has JetStream
}

func startJWTNATS(t *testing.T) *natsOperator {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opk, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opk)
	account := func(js bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pk, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pk)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(okp)
		must(err)
		return kp, pk, token
	}
	_, sysPK, sysJWT := account(false)
	akp, apk, aJWT := account(true)
	resolver := &server.MemAccResolver{}
	must(resolver.Store(sysPK, sysJWT))
	must(resolver.Store(apk, aJWT))
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(), SyncAlways: true,
		TrustedOperators: []*jwt.OperatorClaims{oc}, SystemAccount: sysPK, AccountResolver: resolver,
	})
	must(err)
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return &natsOperator{url: fmt.Sprintf("nats://%s", s.Addr().String()), operator: okp, account: akp}
}

// creds writes a .creds file for a new user signed by signer.
func (n *natsOperator) creds(t *testing.T, signer nkeys.KeyPair) string {
	t.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upk, _ := ukp.PublicKey()
	token, err := jwt.NewUserClaims(upk).Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	file, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "umbra.creds")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cluster.creds_file: a node reaches a NATS server in operator mode with
// the user's .creds file (JWT and NKey seed) and keeps its shadows in the
// account's JetStream; with credentials the server does not trust it does
// not start, and says why.
func TestClusterWithNATSCredentialsFile(t *testing.T) {
	nats := startJWTNATS(t)
	node := brokertest.Start(t, func(o *broker.Options) {
		o.Cluster = broker.ClusterOptions{URLs: []string{nats.url}, Replicas: 1, CredsFile: nats.creds(t, nats.account)}
	})
	body := httpDo(t, "POST", node.HTTPURL()+"/things/signed/shadow", `{"state":{"reported":{"ok":true}}}`, 200)
	if gjson.Get(body, "version").Int() != 1 {
		t.Fatalf("update through a JWT-authenticated cluster connection: %s", body)
	}
	waitStatus(t, node.HTTPURL()+"/readyz", 200)

	// A user signed by another account's key, unknown to this operator.
	stranger, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	err = startClusterNode(t, broker.ClusterOptions{URLs: []string{nats.url}, Replicas: 1, CredsFile: nats.creds(t, stranger), Timeout: time.Second})
	if err == nil {
		t.Fatal("a node with untrusted credentials started")
	}
	if !strings.Contains(err.Error(), "cluster: no NATS server reachable") || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("start with untrusted credentials: %v", err)
	}
	t.Logf("with untrusted credentials: %v", err)

	// A missing file is named.
	err = startClusterNode(t, broker.ClusterOptions{URLs: []string{nats.url}, Replicas: 1, CredsFile: filepath.Join(t.TempDir(), "absent.creds"), Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "absent.creds") {
		t.Fatalf("start with a missing credentials file: %v", err)
	}
	t.Logf("with a missing credentials file: %v", err)
}
