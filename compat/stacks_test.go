package compat

import (
	"io"
	"log"
	"net/http"
	"time"

	"github.com/NYTimes/gziphandler"
	ginzip "github.com/gin-contrib/gzip"
	"github.com/gin-gonic/gin"
	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
	"github.com/gorilla/mux"
	"github.com/klauspost/compress/gzhttp"
	"github.com/labstack/echo/v4"
	echomw "github.com/labstack/echo/v4/middleware"

	"github.com/roomcast/pubsub"
)

// outcome is what a cell does: works, or is refused loudly.
type outcome string

const (
	works   outcome = "works"
	refused outcome = "refused" // 500, Roomcast-Error: misconfigured, one Error log line
)

// hostStack is an app as its authors would write it: a router, its usual
// middleware, the host's own login, and the live handler at /live.
type hostStack struct {
	name  string // the README's row
	mount string // the one line that mounts the handler, for the README
	// ws and sse are the expected outcomes; fix is the README's advice for
	// a refused one.
	ws, sse outcome
	fix     string
	// settle is how long a cell keeps its streams open before the cut, to
	// outlive a middleware's deadline.
	settle time.Duration
	// noise matches the lines net/http is known to log for this stack
	// (its middleware writing to a connection the handler took over), by
	// mode; the README says why and how to avoid them. Any other line
	// fails the matrix.
	noise, heldNoise string
	// note is the README's word on that noise.
	note  string
	build func(ps *pubsub.Broker) http.Handler
}

// sessionUser is every stack's login: the user is the "session" cookie, as
// a real app's session store would say.
func sessionUser(r *http.Request) string {
	c, err := r.Cookie("session")
	if err != nil {
		return ""
	}
	return c.Value
}

// auth is the host's own authentication middleware in net/http style.
func auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := sessionUser(r)
		if u == "" {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), u)))
	})
}

// plainLogWriter is the most common request logger: it wraps the writer to
// see the status, and has no Unwrap.
type plainLogWriter struct {
	http.ResponseWriter
	status int
}

func (w *plainLogWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func plainLogger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&plainLogWriter{ResponseWriter: w}, r)
	})
}

// unwrapLogWriter is the same logger done right: with Unwrap, as
// http.ResponseController expects.
type unwrapLogWriter struct {
	http.ResponseWriter
	status int
}

func (w *unwrapLogWriter) WriteHeader(code int)        { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *unwrapLogWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func unwrapLogger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&unwrapLogWriter{ResponseWriter: w}, r)
	})
}

func stdMux(ps *pubsub.Broker, wrap func(http.Handler) http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/live", wrap(auth(ps.Handler())))
	return mux
}

func identity(h http.Handler) http.Handler { return h }

// chiTimeout is short, so that a cell's streams outlive it.
const chiTimeout = 300 * time.Millisecond

var stacks = []hostStack{
	{
		name: "net/http `ServeMux`", ws: works, sse: works,
		mount: `mux.Handle("/live", auth(ps.Handler()))`,
		build: func(ps *pubsub.Broker) http.Handler { return stdMux(ps, identity) },
	},
	{
		name: "go-chi/chi v5 + RequestID, Logger, Recoverer, Timeout, Compress", ws: works, sse: works,
		mount:  `r.With(auth).Handle("/live", ps.Handler())`,
		settle: chiTimeout + 200*time.Millisecond,
		// Held WebSocket requests end after Timeout's deadline, and
		// Timeout then writes its 504 to the taken-over connection.
		heldNoise: `^http: response\.WriteHeader on hijacked connection from github\.com/go-chi/chi/v5/middleware\.\(\*basicWriter\)\.WriteHeader`,
		note:      "with `WithHoldRequests`, mount `/live` outside `Timeout`: it writes a 504 to each WebSocket when it ends, and net/http logs that line",
		build: func(ps *pubsub.Broker) http.Handler {
			r := chi.NewRouter()
			r.Use(chimw.RequestID,
				chimw.RequestLogger(&chimw.DefaultLogFormatter{Logger: log.New(io.Discard, "", 0), NoColor: true}),
				chimw.Recoverer, chimw.Timeout(chiTimeout), chimw.Compress(5))
			r.With(auth).Handle("/live", ps.Handler())
			return r
		},
	},
	{
		name: "gorilla/mux", ws: works, sse: works,
		mount: `r.Handle("/live", auth(ps.Handler()))`,
		build: func(ps *pubsub.Broker) http.Handler {
			r := mux.NewRouter()
			r.Handle("/live", auth(ps.Handler()))
			return r
		},
	},
	{
		name: "labstack/echo v4 + `middleware.Gzip()`", ws: works, sse: works,
		mount: `e.Any("/live", echo.WrapHandler(ps.Handler()), auth)`,
		build: func(ps *pubsub.Broker) http.Handler {
			e := echo.New()
			e.HideBanner, e.HidePort = true, true
			e.Use(echomw.Gzip())
			e.Any("/live", echo.WrapHandler(ps.Handler()), func(next echo.HandlerFunc) echo.HandlerFunc {
				return func(c echo.Context) error {
					u := sessionUser(c.Request())
					if u == "" {
						return echo.ErrUnauthorized
					}
					c.SetRequest(c.Request().WithContext(pubsub.ContextWithUser(c.Request().Context(), u)))
					return next(c)
				}
			})
			return e
		},
	},
	{
		name: "gin-gonic/gin (`gin.WrapH`)", ws: works, sse: works,
		mount: `r.Any("/live", auth, gin.WrapH(ps.Handler()))`,
		build: func(ps *pubsub.Broker) http.Handler { return ginApp(ps, false) },
	},
	{
		name: "gin + gin-contrib/gzip", ws: works, sse: works,
		mount: `r.Use(gzip.Gzip(gzip.DefaultCompression)); r.Any("/live", auth, gin.WrapH(ps.Handler()))`,
		// gin-contrib/gzip skips upgrades only when Connection contains
		// "Upgrade" in that case; nginx sends "upgrade", and the gzip
		// trailer is then written to the upgraded connection.
		noise:     `^http: response\.Write on hijacked connection from github\.com/gin-gonic/gin\.\(\*responseWriter\)\.Write`,
		heldNoise: `^http: response\.Write on hijacked connection from github\.com/gin-gonic/gin\.\(\*responseWriter\)\.Write`,
		note:      "behind nginx, add `gzip.WithExcludedPaths([]string{\"/live\"})`: gin's gzip takes nginx's `Connection: upgrade` for a plain request and writes its trailer to each WebSocket, which net/http logs",
		build:     func(ps *pubsub.Broker) http.Handler { return ginApp(ps, true) },
	},
	{
		name: "klauspost/compress `gzhttp`", ws: works, sse: works,
		mount: `http.ListenAndServe(addr, gzhttp.GzipHandler(mux))`,
		build: func(ps *pubsub.Broker) http.Handler { return gzhttp.GzipHandler(stdMux(ps, identity)) },
	},
	{
		name: "NYTimes `gziphandler`", ws: works, sse: works,
		mount: `http.ListenAndServe(addr, gziphandler.GzipHandler(mux))`,
		build: func(ps *pubsub.Broker) http.Handler { return gziphandler.GzipHandler(stdMux(ps, identity)) },
	},
	{
		name: "a logging wrapper with `Unwrap`", ws: works, sse: works,
		mount: `mux.Handle("/live", logger(auth(ps.Handler())))`,
		build: func(ps *pubsub.Broker) http.Handler { return stdMux(ps, unwrapLogger) },
	},
	{
		name: "a logging wrapper without `Unwrap`", ws: refused, sse: refused,
		mount: `mux.Handle("/live", logger(auth(ps.Handler())))`,
		fix:   "add `Unwrap() http.ResponseWriter` to the wrapper (the log line names its type), or mount `/live` outside it",
		build: func(ps *pubsub.Broker) http.Handler { return stdMux(ps, plainLogger) },
	},
	{
		// The router's own writer has Hijack and Flush, but they only call
		// into the logger's, which has neither.
		name: "gin behind a logging wrapper without `Unwrap`", ws: refused, sse: refused,
		mount: `http.ListenAndServe(addr, logger(r))`,
		fix:   "add `Unwrap() http.ResponseWriter` to the wrapper (the log line names its type)",
		build: func(ps *pubsub.Broker) http.Handler { return plainLogger(ginApp(ps, false)) },
	},
	{
		name: "`http.TimeoutHandler`", ws: refused, sse: refused,
		mount: `mux.Handle("/live", http.TimeoutHandler(auth(ps.Handler()), d, ""))`,
		fix:   "mount `/live` outside `http.TimeoutHandler`: it buffers the whole response",
		build: func(ps *pubsub.Broker) http.Handler {
			return stdMux(ps, func(h http.Handler) http.Handler { return http.TimeoutHandler(h, 5*time.Second, "timeout") })
		},
	},
}

func ginApp(ps *pubsub.Broker, gz bool) http.Handler {
	r := gin.New()
	r.Use(gin.Recovery())
	if gz {
		r.Use(ginzip.Gzip(ginzip.DefaultCompression))
	}
	r.Any("/live", func(c *gin.Context) {
		u := sessionUser(c.Request)
		if u == "" {
			c.AbortWithStatus(http.StatusUnauthorized)
			return
		}
		c.Request = c.Request.WithContext(pubsub.ContextWithUser(c.Request.Context(), u))
	}, gin.WrapH(ps.Handler()))
	return r
}

func init() { gin.SetMode(gin.ReleaseMode) }
