// Package compat holds the host-stack compatibility matrix: the live handler
// mounted in every router and middleware stack people run (net/http, chi,
// gorilla/mux, echo, gin, compression and timeout middlewares, logging
// wrappers), over HTTP/1.1, h2c and TLS HTTP/2, directly, behind
// httputil.ReverseProxy and behind a real nginx. It is a module of its own
// so that those stacks are test dependencies of this module only, never of
// the library's users. README.md's "Works with" table is generated from it:
//
//	go test ./... -run TestMatrix -update
package compat
