// Package demoapp runs an example's HTTP server with a graceful shutdown:
// on Ctrl-C the broker tells live clients to reconnect (close 1012) and
// the HTTP server drains.
package demoapp

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/roomcast/pubsub"
)

// Serve listens on addr until SIGINT or SIGTERM.
func Serve(addr string, h http.Handler, ps *pubsub.Broker, logger *slog.Logger) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ps.Shutdown(shutdown)
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("listening", "url", "http://"+addr)
	err := srv.ListenAndServe()
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}

// Page serves an example's single HTML page.
func Page(html []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(html)
	}
}
