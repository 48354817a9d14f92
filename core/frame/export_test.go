package frame

// BufCap exposes the capacity of the Reader's buffer to the tests, which check that a length
// claim never makes it grow past what the limits allow.
func (r *Reader) BufCap() int { return cap(r.buf) }
