package embedded

import (
	"os"
	"runtime"
	"testing"
)

// SyncAlways reaches the server's JetStream configuration, and
// RestartJetStream keeps it and the store directory.
func TestSyncAlwaysAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Options{JetStream: true, StoreDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if c := s.NATS().JetStreamConfig(); c == nil || !c.SyncAlways || s.StoreDir() != c.StoreDir {
		t.Fatalf("JetStream config %+v, store dir %q", c, s.StoreDir())
	}
	if free, ok := s.StoreFree(); !ok || free == 0 {
		t.Fatalf("free space of the store's disk unknown: %d %v", free, ok)
	}
	if err := s.RestartJetStream(); err != nil {
		t.Fatal(err)
	}
	if c := s.NATS().JetStreamConfig(); c == nil || !c.SyncAlways || c.StoreDir == "" {
		t.Fatalf("after restart: %+v", c)
	}
}

// A temporary store whose server is gone (its lock released, as a killed
// process's is) is removed by the next Start; one whose lock is held is not.
func TestStaleTempStoreRemoved(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix only")
	}
	stale, _ := os.MkdirTemp("", tempDirPrefix)
	live, _ := os.MkdirTemp("", tempDirPrefix)
	defer os.RemoveAll(live)
	held, err := claimTempDir(live)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	gone, err := claimTempDir(stale)
	if err != nil {
		t.Fatal(err)
	}
	gone.Close() // its process died
	s, err := Start(Options{JetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	own := s.StoreDir()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the dead process's store is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a living process's store was removed: %v", err)
	}
	s.Shutdown()
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("Shutdown left its own store: %v", err)
	}
}
