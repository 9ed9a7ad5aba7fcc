package pubsub

import (
	"context"
	"net/http"
	"time"
)

type userKey struct{}

// ContextWithUser returns a copy of ctx in which the connection's user is
// user. Call it in the host's own authentication middleware, before the
// request reaches Handler or Accept:
//
//	next.ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), session.UserID)))
//
// A connection keeps the whole request context (minus its cancellation) for
// its lifetime, so any other value the middleware stored is visible to
// authorization hooks too.
func ContextWithUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, userKey{}, user)
}

// UserFromContext returns the user stored by ContextWithUser, or "" for an
// anonymous request. Authorization hooks receive the user directly;
// UserFromContext is for the host's own code.
func UserFromContext(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// WithUser is ContextWithUser.
//
// Deprecated: use ContextWithUser; WithUser read like an Option. It will be
// removed in the release after next.
//
//go:fix inline
func WithUser(ctx context.Context, user string) context.Context { return ContextWithUser(ctx, user) }

// UserFrom is UserFromContext.
//
// Deprecated: use UserFromContext. It will be removed in the release after
// next.
//
//go:fix inline
func UserFrom(ctx context.Context) string { return UserFromContext(ctx) }

// Identify returns middleware that names the user of each request with
// identify, for hosts whose authentication already keeps the user under a
// context key of its own:
//
//	mux.Handle("/live", auth(pubsub.Identify(func(r *http.Request) string {
//		return r.Context().Value(currentUserKey).(*User).ID
//	})(ps.Handler())))
//
// An empty result leaves the request anonymous.
func Identify(identify func(r *http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u := identify(r); u != "" {
				r = r.WithContext(ContextWithUser(r.Context(), u))
			}
			next.ServeHTTP(w, r)
		})
	}
}

type expiryKey struct{}

// ContextWithExpiry returns a copy of ctx in which the session behind the
// request ends at t. Call it in the host's middleware next to
// ContextWithUser, with the session's own expiry: a connection made with it
// is asked to refresh shortly before t (a "refresh" frame; the browser
// client answers by itself) and ends at t with close code 4005 unless
// refreshed. A refresh is a POST to the same mount path, so it passes the
// host's middleware again, which decides (its cookie or session check) and
// names the new expiry with ContextWithExpiry. See Handler.
//
// The refresh must reach Handler through the same middleware: a CSRF
// middleware must let a JSON POST to the mount path through (it is safe:
// a refresh only extends the caller's own connection), cross-origin pages
// need the host's CORS middleware to answer its preflight, and a host that
// serves connections with Accept routes POSTs on the path to Handler. An
// anonymous connection cannot refresh: it ends at t.
func ContextWithExpiry(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, expiryKey{}, t)
}

// ExpiryFromContext returns the expiry stored by ContextWithExpiry, or the
// zero time.
func ExpiryFromContext(ctx context.Context) time.Time {
	t, _ := ctx.Value(expiryKey{}).(time.Time)
	return t
}
