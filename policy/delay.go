package policy

import (
	"fmt"
	"time"

	"tollgate/algorithms"
)

// delayOf reads a limit's delay (field f's "delay", as written): a Go
// duration from 0 to the limit's window, on an algorithm with future slots
// (a bucket: token_bucket, gcra). The engine then admits a request the
// limit would admit within the delay for that moment, and the middleware
// holds it until then.
func delayOf(f string, spec algorithms.Spec, text string, window time.Duration) (time.Duration, error) {
	if text == "" {
		return 0, nil
	}
	if !spec.Bucket {
		return 0, fmt.Errorf("%s.delay: %s has no future slots to wait for: want token_bucket or gcra, or no delay", f, spec.Name)
	}
	d, err := time.ParseDuration(text)
	if err != nil || d < 0 || d > window {
		return 0, fmt.Errorf("%s.delay: %q: want a Go duration from 0 to the window (%v), such as 2s: how long a request may wait for its slot", f, text, window)
	}
	return d, nil
}
