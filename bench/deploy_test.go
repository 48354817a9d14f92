package bench

import "testing"

// Ports picked for one deployment must differ: the kernel may hand out a port again as soon as
// it is closed.
func TestFreePortsDistinct(t *testing.T) {
	for range 20 {
		ports, err := FreePorts(50)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, p := range ports {
			if seen[p] || p <= 0 {
				t.Fatalf("port %d twice or invalid in %v", p, ports)
			}
			seen[p] = true
		}
	}
}
