//go:build unix

package devserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on dir for the life of the server. Two servers on one
// SQLite file would corrupt each other's view of the cluster (and the second's start
// clears the first's membership rows), which free ports would otherwise let happen
// silently. The OS drops the lock if the process dies, so a crash never leaves it stuck.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, DBFileName+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("devserver: locking DataDir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("devserver: DataDir %s is in use by another running server", dir)
		}
		return nil, fmt.Errorf("devserver: locking DataDir: %w", err)
	}
	return func() { _ = f.Close() }, nil
}
