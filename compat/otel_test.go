package compat

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/pubsubprom"
)

// OpenTelemetry reads the broker's metrics through its official Prometheus
// bridge, as pubsubprom's documentation tells users to: the same names,
// counters as sums, histograms as histograms.
func TestOpenTelemetryBridge(t *testing.T) {
	ps, err := pubsub.New(pubsub.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	ctx := context.Background()
	for range 3 {
		if err := ps.Publish(ctx, "lobby", []byte(`1`)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(pubsubprom.NewCollector(ps))
	reader := metric.NewManualReader(metric.WithProducer(otelprom.NewMetricProducer(otelprom.WithGatherer(reg))))
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	defer mp.Shutdown(ctx)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
		}
	}
	pub, ok := got["roomcast_published_messages_total"].(metricdata.Sum[float64])
	if !ok || !pub.IsMonotonic {
		t.Fatalf("published: %T %+v", got["roomcast_published_messages_total"], got["roomcast_published_messages_total"])
	}
	var server float64
	for _, dp := range pub.DataPoints {
		if v, _ := dp.Attributes.Value("source"); v.AsString() == "server" {
			server = dp.Value
		}
	}
	if server != 3 {
		t.Fatalf("published by the server: %v, want 3", server)
	}
	if _, ok := got["roomcast_delivery_delay_seconds"].(metricdata.Histogram[float64]); !ok {
		t.Fatalf("delivery delay: %T", got["roomcast_delivery_delay_seconds"])
	}
	if _, ok := got["roomcast_connections"].(metricdata.Gauge[float64]); !ok {
		t.Fatalf("connections: %T", got["roomcast_connections"])
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range got {
			if !yield(n) {
				return
			}
		}
	})
	if len(names) != 18 {
		t.Fatalf("%d metrics through the bridge, want 18: %v", len(names), names)
	}
}
