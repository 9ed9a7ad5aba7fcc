package compat

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/testkit"
)

// variant is how a client reaches a stack: directly or through a proxy, over
// one HTTP protocol.
type variant struct {
	front string // "direct", "ReverseProxy", "nginx"
	proto string // "HTTP/1.1", "h2c", "HTTP/2"
}

func (v variant) String() string { return v.front + " " + v.proto }

var variants = []variant{
	{"direct", "HTTP/1.1"}, {"direct", "h2c"}, {"direct", "HTTP/2"},
	{"ReverseProxy", "HTTP/1.1"}, {"ReverseProxy", "h2c"}, {"ReverseProxy", "HTTP/2"},
	{"nginx", "HTTP/1.1"}, {"nginx", "HTTP/2"},
}

// endpoint is where a cell connects, with the clients a browser would use
// there: SSE over the variant's protocol, WebSocket over HTTP/1.1 (browsers
// upgrade on an HTTP/1.1 connection, even to an HTTP/2 server).
type endpoint struct {
	url       string // the live path
	sse, ws   *http.Client
	sseProtoM int // the HTTP major version the SSE response must come over
}

// certs is one self-signed certificate for 127.0.0.1, shared by the TLS
// servers and nginx, and trusted by the clients.
type certs struct {
	tls      tls.Certificate
	pool     *x509.CertPool
	certFile string
	keyFile  string
}

func newCerts(t *testing.T) *certs {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	c := &certs{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(c.certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, keyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if c.tls, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	c.pool = x509.NewCertPool()
	c.pool.AppendCertsFromPEM(certPEM)
	return c
}

// clients returns the SSE and WebSocket clients for a base URL and protocol.
func (c *certs) clients(proto string) (sse, ws *http.Client) {
	sseT := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool}}
	switch proto {
	case "h2c":
		sseT.Protocols = new(http.Protocols)
		sseT.Protocols.SetUnencryptedHTTP2(true)
	case "HTTP/2":
		sseT.ForceAttemptHTTP2 = true
	}
	wsT := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool, NextProtos: []string{"http/1.1"}}}
	return &http.Client{Transport: sseT}, &http.Client{Transport: wsT}
}

// serve runs h on a loopback port over proto and returns its base URL.
// net/http's own complaints (a write on a hijacked connection, a
// superfluous WriteHeader, a handler's panic) go to errorLog.
func (c *certs) serve(t *testing.T, h http.Handler, proto string, errorLog io.Writer) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: log.New(errorLog, "", 0), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	serve := func() error { return srv.Serve(ln) }
	scheme := "http"
	switch proto {
	case "h2c":
		srv.Protocols.SetUnencryptedHTTP2(true)
	case "HTTP/2":
		srv.Protocols.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c.tls}}
		serve = func() error { return srv.ServeTLS(ln, "", "") } // offers h2 by ALPN
		scheme = "https"
	}
	go func() { _ = serve() }()
	t.Cleanup(func() { srv.Close() })
	return scheme + "://" + ln.Addr().String()
}

// reverseProxy is httputil.ReverseProxy in front of backend, as Go apps
// and gateways commonly run it.
func reverseProxy(backend string) http.Handler {
	u, _ := url.Parse(backend)
	return &httputil.ReverseProxy{
		Rewrite:  func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host },
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// nginx is a real nginx (Debian's package) in front of several backends,
// one server block each, configured as nginx's own documentation proxies
// WebSocket, with its defaults otherwise (proxy_buffering on).
type nginx struct {
	dir string
	cmd *exec.Cmd
}

// nginxPorts are one backend's two listeners: HTTP/1.1, and TLS with HTTP/2.
type nginxPorts struct{ plain, tls int }

func startNginx(t *testing.T, c *certs, backends []string) []nginxPorts {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx not found and CI is set: ./test.sh installs it")
		}
		t.Skip("nginx not found: ./test.sh installs it")
	}
	dir, err := os.MkdirTemp("", "roomcast-nginx")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o777) // worker processes may run as nobody
	t.Cleanup(func() { os.RemoveAll(dir) })
	var servers strings.Builder
	ports := make([]nginxPorts, len(backends))
	free := testkit.FreePorts(t, 2*len(backends))
	for i, b := range backends {
		ports[i] = nginxPorts{free[2*i], free[2*i+1]}
		fmt.Fprintf(&servers, `
    server {
        listen 127.0.0.1:%d;
        listen 127.0.0.1:%d ssl http2;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location / {
            proxy_pass %s;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
        }
    }
`, ports[i].plain, ports[i].tls, c.certFile, c.keyFile, b)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
error_log %[1]s/error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
%[2]s}
`, dir, servers.String())
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confFile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// An interrupted test run must not leave nginx behind (its workers
	// follow their master).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.StopAtCleanup(t, cmd, 5*time.Second, nil)
	for _, p := range ports {
		waitListening(t, p.plain, cmd, dir)
		waitListening(t, p.tls, cmd, dir)
	}
	return ports
}

func waitListening(t *testing.T, port int, cmd *exec.Cmd, dir string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not listen on %d: %s", port, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
