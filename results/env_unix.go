//go:build unix

package results

import "syscall"

// fileLimit returns the RLIMIT_NOFILE soft limit, or 0.
func fileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return uint64(lim.Cur)
}
