package pubsub

import (
	"fmt"

	"github.com/roomcast/pubsub/internal/history"
)

// Sizing and recovery of a history store the broker's own embedded server
// keeps.
const (
	defaultFileStoreBytes = 1 << 30
	minStoreBytes         = 8 << 20
	// recoverFree is the free space a full store disk must have again
	// before the broker restarts JetStream on it; under fullBelow it is
	// full (the store may be unable to write a message).
	recoverFree = 16 << 20
	fullBelow   = 4 << 20
)

// sizeOwnStore fits the history stream to the embedded server's disk
// (unless the host chose a size) and lets the store restart JetStream
// when writes failed and the disk has room again.
func (b *Broker) sizeOwnStore(hc *history.Config) error {
	if !hc.File {
		return nil // memory: the 256 MiB default
	}
	free, known := b.srv.StoreFree()
	if hc.MaxBytes == 0 {
		hc.MaxBytesIsDefault = true
		hc.MaxBytes = defaultFileStoreBytes
		if known {
			hc.MaxBytes = min(hc.MaxBytes, int64(free/2))
		}
		if hc.MaxBytes < minStoreBytes {
			return fmt.Errorf("%w: the history store's disk (%s) has %d MiB free, too little for history: free space there, choose another WithStoreDir, or set WithHistoryMaxBytes",
				ErrStoreFailed, b.srv.StoreDir(), free>>20)
		}
	}
	hc.Full = func() bool {
		free, ok := b.srv.StoreFree()
		return ok && free < max(fullBelow, 2*uint64(b.cfg.maxMessage))
	}
	if b.cfg.embedded.Cluster == nil {
		hc.Recover = func() error {
			if free, ok := b.srv.StoreFree(); ok && free < recoverFree {
				return fmt.Errorf("%d MiB free on %s", free>>20, b.srv.StoreDir())
			}
			return b.srv.RestartJetStream()
		}
	}
	return nil
}
