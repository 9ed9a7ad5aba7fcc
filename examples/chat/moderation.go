package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/examples/internal/demoauth"
)

// mountModeration adds the moderator's REST routes, each one Go call on the
// broker that reaches the user's connections on every instance. Who may
// call them is the app's decision: here, the user named "admin".
func mountModeration(mux *http.ServeMux, ps *pubsub.Broker, auth *demoauth.Sessions) {
	mod := func(h http.HandlerFunc) http.Handler { return auth.RequireLogin(requireModerator(h)) }

	// Kick: every connection of the user ends with close code 4003 and
	// the browser client does not reconnect.
	mux.Handle("POST /api/users/{user}/disconnect", mod(func(w http.ResponseWriter, r *http.Request) {
		n, err := ps.DisconnectUser(r.Context(), r.PathValue("user"), pubsub.Disconnect{Reason: "kicked by a moderator"})
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			// An instance did not answer (one that just died still counts
			// for a few seconds): say what was done, and that it may be partial.
			writeJSON(w, http.StatusOK, map[string]any{"disconnected": n, "warning": err.Error()})
		case err != nil:
			writeControlError(w, err)
		default:
			writeJSON(w, http.StatusOK, map[string]int{"disconnected": n})
		}
	}))
	// The user's connections, on every instance: ids for the routes below.
	mux.Handle("GET /api/users/{user}/conns", mod(func(w http.ResponseWriter, r *http.Request) {
		conns, err := ps.UserConns(r.Context(), r.PathValue("user"))
		if err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"conns": conns})
	}))
	// Move a connection into a room, or take it out.
	mux.Handle("POST /api/conns/{conn}/rooms/{room}", mod(func(w http.ResponseWriter, r *http.Request) {
		if err := ps.SubscribeConn(r.Context(), r.PathValue("conn"), r.PathValue("room")); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "subscribed"})
	}))
	mux.Handle("DELETE /api/conns/{conn}/rooms/{room}", mod(func(w http.ResponseWriter, r *http.Request) {
		if err := ps.UnsubscribeConn(r.Context(), r.PathValue("conn"), r.PathValue("room")); err != nil {
			writeControlError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "unsubscribed"})
	}))
}

func requireModerator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pubsub.UserFromContext(r.Context()) != demoauth.OperatorName {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "moderators only"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeControlError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, pubsub.ErrNoSuchConn):
		status = http.StatusNotFound
	case errors.Is(err, pubsub.ErrInvalidConnID), errors.Is(err, pubsub.ErrInvalidRoom), errors.Is(err, pubsub.ErrInvalidUser):
		status = http.StatusBadRequest
	case errors.Is(err, pubsub.ErrTooManyRooms):
		status = http.StatusConflict
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
