package broker

import (
	"context"

	"github.com/umbra-iot/umbra/internal/cluster/bridge"
	"github.com/umbra-iot/umbra/shadow"
	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
)

// bridgeHooks returns the cross-node delivery hook on a cluster node
// (internal/cluster/bridge), none on a single node. It runs in addHooks,
// after Mochi is built and before it serves.
func (b *Broker) bridgeHooks() ([]mqtt.Hook, error) {
	if b.cluster == nil {
		return nil, nil
	}
	br, err := bridge.New(bridge.Config{
		NC: b.cluster.NC, Server: b.mqtt, Node: b.cluster.Name,
		Replicas: b.opts.Cluster.Replicas, Timeout: b.opts.Cluster.Timeout,
		Logger: b.log.With("component", "bridge"),
	})
	if err != nil {
		return nil, err
	}
	b.bridge = br
	b.metrics.reg.MustRegister(br.Collectors()...)
	return []mqtt.Hook{br}, nil
}

// startBridge starts delivery once Mochi serves (it has read its session
// store, so Resync sees the restored subscriptions).
func (b *Broker) startBridge(ctx context.Context) error {
	if b.bridge == nil {
		return nil
	}
	return b.bridge.Start(ctx)
}

// closeBridge stops cross-node delivery (Shutdown, failed Start).
func (b *Broker) closeBridge() {
	if b.bridge != nil {
		b.bridge.Close()
	}
}

// shadowPublisher is where shadow replies go. On a cluster node a reply's
// subscriber may be on another node, which the local topic index cannot
// tell, so the /documents check always says yes there.
func (b *Broker) shadowPublisher() shadow.Publisher {
	if b.cluster != nil {
		return clusterPublisher{mqttPublisher{b.mqtt}}
	}
	return mqttPublisher{b.mqtt}
}

type clusterPublisher struct{ mqttPublisher }

func (clusterPublisher) HasSubscribers(string) bool { return true }
