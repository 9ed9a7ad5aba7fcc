package pubsub

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/stats"
)

// Stats is what one instance has done since it started, and what it holds
// now. Counters only grow; gauges say what is. It encodes to JSON for
// dashboards (see AdminHandler) and is what the pubsubprom package exports
// to Prometheus.
type Stats struct {
	Instance string    `json:"instance"`
	At       time.Time `json:"at"`
	// Counting is false on a broker made WithoutStats: then only the
	// gauges mean anything, and every counter and histogram is empty.
	Counting bool `json:"counting"`

	// Gauges.
	WebSocketConns int `json:"websocket_conns"` // open WebSocket connections
	SSEConns       int `json:"sse_conns"`       // open SSE streams
	Rooms          int `json:"rooms"`           // rooms with local subscribers
	// TopRooms are the rooms with the most local subscribers, at most 10.
	TopRooms []RoomSubscribers `json:"top_rooms"`
	// QueueHighWater is the most frames one connection's send queue has
	// held when its writer took them (the limit is WithSendQueue's).
	QueueHighWater int `json:"queue_high_water"`
	// HistoryMessages and HistoryBytes are the history store's size (all
	// instances share it), at most five seconds old; 0 without history.
	HistoryMessages uint64 `json:"history_messages"`
	HistoryBytes    uint64 `json:"history_bytes"`

	// Counters.
	PublishedServer int64 `json:"published_server"` // messages Go code published (rooms, users, connections)
	PublishedClient int64 `json:"published_client"` // messages clients published
	Deliveries      int64 `json:"deliveries"`       // frames queued on connections by the fan-out
	Writes          int64 `json:"writes"`           // socket writes: Deliveries/Writes is the batching
	WrittenFrames   int64 `json:"written_frames"`   // frames those writes carried, control frames included
	WrittenBytes    int64 `json:"written_bytes"`    // their payload bytes
	SlowConsumers   int64 `json:"slow_consumers"`   // connections closed for falling behind (4001)
	// Denied counts refusals by kind: "subscribe", "publish", "history",
	// "presence" (the host's hooks said no), "origin" (a foreign page),
	// "misconfigured" (the host's middleware hides the connection).
	Denied         map[string]int64 `json:"denied"`
	Resumes        int64            `json:"resumes"`         // resumes completed
	Replayed       int64            `json:"replayed"`        // messages they replayed from history
	Truncated      int64            `json:"truncated"`       // "truncated" notices: history no longer covered a client
	NATSReconnects uint64           `json:"nats_reconnects"` // the broker's NATS connection reconnected

	// DeliveryDelay is how long a message waited in this process, from
	// the fan-out to the socket write that carried it (measured per write,
	// for its oldest message). ResumeDuration is how long resumes took.
	DeliveryDelay  Histogram `json:"delivery_delay"`
	ResumeDuration Histogram `json:"resume_duration"`
}

// RoomSubscribers is a room and its local subscribers.
type RoomSubscribers struct {
	Room        string `json:"room"`
	Subscribers int    `json:"subscribers"`
}

// Histogram is a distribution of durations: Counts[i] of them were at most
// Bounds[i] and above Bounds[i-1]; the last count is above every bound.
type Histogram struct {
	Bounds []time.Duration `json:"bounds_ns"`
	Counts []uint64        `json:"counts"`
	Count  uint64          `json:"count"`
	Sum    time.Duration   `json:"sum_ns"`
}

// Quantile estimates the q-quantile (0 < q < 1): the upper bound of the
// bucket it falls in.
func (h Histogram) Quantile(q float64) time.Duration {
	return stats.Buckets(h).Quantile(q)
}

// Stats reads this instance's counters: lock-free but for a few gauges
// read under the broker's locks, and a round trip to JetStream at most
// every five seconds for the history store's size. With WithoutStats, only
// the gauges are filled.
func (b *Broker) Stats() Stats {
	st := Stats{
		Instance:       b.instance,
		At:             time.Now(),
		NATSReconnects: b.nc.Stats().Reconnects,
		Denied:         make(map[string]int64, stats.NumDenials),
	}
	if s := b.stats; s != nil {
		st.Counting = true
		st.WebSocketConns = int(s.WebSocket.Load())
		st.SSEConns = int(s.SSE.Load())
		st.QueueHighWater = int(s.QueueHighWater.Load())
		st.PublishedServer = s.PublishedServer.Load()
		st.PublishedClient = s.PublishedClient.Load()
		st.Deliveries = s.Deliveries.Load()
		st.Writes = s.Writes.Load()
		st.WrittenFrames = s.WrittenFrames.Load()
		st.WrittenBytes = s.WrittenBytes.Load()
		st.SlowConsumers = s.SlowConsumerCloses.Load()
		st.Resumes = s.Resumes.Load()
		st.Replayed = s.Replayed.Load()
		st.Truncated = s.Truncated.Load()
		st.DeliveryDelay = Histogram(s.DeliveryDelay.Snapshot())
		st.ResumeDuration = Histogram(s.ResumeDuration.Snapshot())
		for i, name := range stats.DenialNames {
			st.Denied[name] = s.Denied[i].Load()
		}
	} else {
		st.WebSocketConns, st.SSEConns = b.countConns()
	}
	rooms := b.fan.Rooms()
	st.Rooms = len(rooms)
	slices.SortFunc(rooms, func(a, b stats.Room) int { return cmp.Or(b.Members-a.Members, cmp.Compare(a.Name, b.Name)) })
	for _, r := range rooms[:min(len(rooms), 10)] {
		st.TopRooms = append(st.TopRooms, RoomSubscribers{Room: r.Name, Subscribers: r.Members})
	}
	if b.hist != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st.HistoryMessages, st.HistoryBytes, _ = b.hist.Size(ctx)
		cancel()
	}
	return st
}

// countConns counts the open connections by transport, for a broker that
// keeps no counters.
func (b *Broker) countConns() (ws, sse int) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, c := range b.conns {
		if c.ws != nil {
			ws++
		} else {
			sse++
		}
	}
	return ws, sse
}

// ClusterStats gathers Stats from every instance on the broker's NATS,
// this one included, until each instance presence knows of has answered,
// ctx ends or clusterStatsWait passes, whichever is first. It returns what
// arrived, sorted by instance; an error only when nothing did.
func (b *Broker) ClusterStats(ctx context.Context) ([]Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterStatsWait)
	defer cancel()
	inbox := b.nc.NewRespInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(b.subjects.Stats(), inbox, nil); err != nil {
		return nil, err
	}
	want := b.pres.Instances()
	var all []Stats
	for len(all) < want {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if len(all) > 0 {
				break
			}
			return nil, err
		}
		var st Stats
		if json.Unmarshal(m.Data, &st) == nil {
			all = append(all, st)
		}
	}
	slices.SortFunc(all, func(x, y Stats) int { return cmp.Compare(x.Instance, y.Instance) })
	return all, nil
}

// clusterStatsWait bounds ClusterStats: an instance presence still counts
// (dead, or too old to answer) must not hold a dashboard up.
const clusterStatsWait = 2 * time.Second

// answerStats answers ClusterStats requests from any instance.
func (b *Broker) answerStats(m *nats.Msg) {
	data, _ := json.Marshal(b.Stats())
	_ = m.Respond(data)
}
