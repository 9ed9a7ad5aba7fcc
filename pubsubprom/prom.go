// Package pubsubprom exports a pubsub.Broker's Stats to Prometheus.
//
// It is the only part of the module that imports
// github.com/prometheus/client_golang; a host that does not use Prometheus
// does not link it.
//
//	ps, _ := pubsub.New()
//	prometheus.MustRegister(pubsubprom.NewCollector(ps))
//	mux.Handle("GET /metrics", promhttp.Handler())
//
// or, for a host without a registry of its own, Handler:
//
//	mux.Handle("GET /metrics", pubsubprom.Handler(ps))
//
// Every scrape reads Broker.Stats once (lock-free counters, and the history
// store's size at most five seconds old), so the metrics of one scrape are
// consistent with each other. The metrics are this instance's: scrape every
// instance, as Prometheus does with its targets.
//
// # Metrics
//
// Gauges:
//
//	roomcast_connections{transport="websocket"|"sse"}  open connections
//	roomcast_rooms                                     rooms with local subscribers
//	roomcast_send_queue_high_water_frames              deepest send queue seen
//	roomcast_history_messages, roomcast_history_bytes  history store size (shared by all instances)
//
// Counters:
//
//	roomcast_published_messages_total{source="server"|"client"}
//	roomcast_deliveries_total                 messages queued on connections
//	roomcast_writes_total                     socket writes (deliveries/writes is the batching)
//	roomcast_written_frames_total             frames in those writes, control frames included
//	roomcast_written_bytes_total
//	roomcast_slow_consumer_closes_total       connections closed for falling behind (4001)
//	roomcast_denied_total{kind="subscribe"|"publish"|"history"|"presence"|"origin"|"misconfigured"}
//	roomcast_resumes_total
//	roomcast_replayed_messages_total
//	roomcast_truncated_total                  clients told history no longer covered them
//	roomcast_nats_reconnects_total
//
// Histograms:
//
//	roomcast_delivery_delay_seconds   fan-out to the socket write that carried the message, in this process
//	roomcast_resume_duration_seconds  how long resumes took
//
// # OpenTelemetry
//
// OpenTelemetry's Go SDK reads Prometheus collectors through its official
// bridge, go.opentelemetry.io/contrib/bridges/prometheus: register the
// collector on a prometheus.Registry and pass
// prometheus.NewMetricProducer(prometheus.WithGatherer(reg)) to the
// reader of your MeterProvider (a PeriodicReader with an OTLP exporter,
// say). The metric names and units are the ones above
// (compat/otel_test.go in the repository runs this bridge).
//
// A broker made WithoutStats exports its gauges only. With
// pubsub.WithNATSConn, the broker does not own the connection's handlers:
// the host logs its NATS disconnects and reconnects itself.
package pubsubprom

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roomcast/pubsub"
)

// Handler serves the broker's metrics, and the Go runtime's and the
// process's, in the Prometheus exposition format, from a registry of its
// own. A host with its own registry registers NewCollector instead.
func Handler(b *pubsub.Broker) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(b),
		prometheus.NewGoCollector(),
		prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// NewCollector returns a prometheus.Collector of the broker's Stats.
func NewCollector(b *pubsub.Broker) prometheus.Collector {
	return &collector{b: b}
}

type collector struct{ b *pubsub.Broker }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("roomcast_"+name, help, labels, nil)
}

var (
	dConns      = desc("connections", "Open live connections, by transport.", "transport")
	dRooms      = desc("rooms", "Rooms with at least one subscriber on this instance.")
	dQueueHigh  = desc("send_queue_high_water_frames", "The most frames one connection's send queue held when its writer took them.")
	dHistMsgs   = desc("history_messages", "Messages in the history store (shared by every instance; at most 5 s old).")
	dHistBytes  = desc("history_bytes", "Bytes in the history store (shared by every instance; at most 5 s old).")
	dPublished  = desc("published_messages_total", "Messages published, by source: Go code (server) or clients.", "source")
	dDeliveries = desc("deliveries_total", "Messages the fan-out queued on connections.")
	dWrites     = desc("writes_total", "Socket writes; deliveries per write is the batching.")
	dWFrames    = desc("written_frames_total", "Frames carried by socket writes, control frames included.")
	dWBytes     = desc("written_bytes_total", "Payload bytes carried by socket writes.")
	dSlow       = desc("slow_consumer_closes_total", "Connections closed because their send queue overflowed (close code 4001).")
	dDenied     = desc("denied_total", "Refused operations and connections, by kind.", "kind")
	dResumes    = desc("resumes_total", "Resumes completed.")
	dReplayed   = desc("replayed_messages_total", "Messages replayed from history by resumes.")
	dTruncated  = desc("truncated_total", "Truncated notices: history no longer covered a resuming client.")
	dReconnects = desc("nats_reconnects_total", "Times the broker's NATS connection reconnected.")
	dDelay      = desc("delivery_delay_seconds", "Time from the fan-out to the socket write that carried a message, in this process.")
	dResumeDur  = desc("resume_duration_seconds", "How long resumes took.")
)

var all = []*prometheus.Desc{
	dConns, dRooms, dQueueHigh, dHistMsgs, dHistBytes, dPublished, dDeliveries, dWrites,
	dWFrames, dWBytes, dSlow, dDenied, dResumes, dReplayed, dTruncated, dReconnects, dDelay, dResumeDur,
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range all {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(dConns, float64(s.WebSocketConns), "websocket")
	gauge(dConns, float64(s.SSEConns), "sse")
	gauge(dRooms, float64(s.Rooms))
	gauge(dQueueHigh, float64(s.QueueHighWater))
	gauge(dHistMsgs, float64(s.HistoryMessages))
	gauge(dHistBytes, float64(s.HistoryBytes))
	if !s.Counting {
		return // WithoutStats: counters would read as zeros that are not
	}
	counter(dPublished, float64(s.PublishedServer), "server")
	counter(dPublished, float64(s.PublishedClient), "client")
	counter(dDeliveries, float64(s.Deliveries))
	counter(dWrites, float64(s.Writes))
	counter(dWFrames, float64(s.WrittenFrames))
	counter(dWBytes, float64(s.WrittenBytes))
	counter(dSlow, float64(s.SlowConsumers))
	for kind, n := range s.Denied {
		counter(dDenied, float64(n), kind)
	}
	counter(dResumes, float64(s.Resumes))
	counter(dReplayed, float64(s.Replayed))
	counter(dTruncated, float64(s.Truncated))
	counter(dReconnects, float64(s.NATSReconnects))
	histogram(ch, dDelay, s.DeliveryDelay)
	histogram(ch, dResumeDur, s.ResumeDuration)
}

// histogram converts per-bucket counts to Prometheus's cumulative ones.
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h pubsub.Histogram) {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		buckets[b.Seconds()] = cum
	}
	ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets)
}
