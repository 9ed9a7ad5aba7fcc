//go:build unix

package embedded

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// pidFile marks a temporary store directory as owned: its owner holds an
// exclusive lock on it for the server's life (a lock, unlike a pid, is
// right across pid namespaces: containers sharing /tmp).
const pidFile = "roomcast.pid"

// claimTempDir locks dir for this process and returns the lock's file,
// to be closed at Shutdown.
func claimTempDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, pidFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()))
	return f, nil
}

// removeStaleTempDirs removes the temporary store directories of embedded
// servers that are gone (a SIGKILLed process cannot remove its own): those
// whose lock file nobody holds. Others, and directories without one, are
// left alone.
func removeStaleTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, dir := range dirs {
		f, err := os.OpenFile(filepath.Join(dir, pidFile), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = os.RemoveAll(dir) // its owner is gone: the lock went with it
		}
		f.Close()
	}
}
