package frame_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The codec starts no goroutine; nothing its tests do may leave one behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
