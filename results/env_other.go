//go:build !unix

package results

// fileLimit returns 0: there is no RLIMIT_NOFILE here.
func fileLimit() uint64 { return 0 }
