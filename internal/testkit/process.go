package testkit

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int { return FreePorts(t, 1)[0] }

// FreePorts returns n distinct loopback TCP ports that were free a moment
// ago (held open together, so that none is handed out twice).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// StopAtCleanup interrupts the started cmd when the test ends, as an
// operator's Ctrl-C would, and kills it if it has not exited within grace.
// It reports whether the process stopped by itself.
func StopAtCleanup(t testing.TB, cmd *exec.Cmd, grace time.Duration, stopped func(graceful bool)) {
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		graceful := true
		select {
		case <-done:
		case <-time.After(grace):
			graceful = false
			_ = cmd.Process.Kill()
			<-done
		}
		if stopped != nil {
			stopped(graceful)
		}
	})
}
