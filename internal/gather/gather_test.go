package gather

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestTarget(t *testing.T) {
	var active atomic.Int64
	p := &Policy{Delay: time.Millisecond, MinActive: 8, Active: &active}
	for _, tc := range []struct {
		active  int64
		members int
		wait    time.Duration
	}{
		{0, 0, 0},
		{1, 0, 0},
		{7, 0, 0}, // below MinActive: an idle node answers at once
		{8, 4, time.Millisecond},
		{64, 32, time.Millisecond},
	} {
		active.Store(tc.active)
		m, w := p.Target()
		if m != tc.members || w != tc.wait {
			t.Errorf("%d active: Target() = %d, %v; want %d, %v", tc.active, m, w, tc.members, tc.wait)
		}
	}
	var nilPolicy *Policy
	if m, w := nilPolicy.Target(); m != 0 || w != 0 {
		t.Errorf("nil policy: Target() = %d, %v; want no wait", m, w)
	}
	active.Store(100)
	if m, w := (&Policy{MinActive: 1, Active: &active}).Target(); m != 0 || w != 0 {
		t.Errorf("zero delay: Target() = %d, %v; want no wait", m, w)
	}
}

func TestQuietGap(t *testing.T) {
	if got := (&Policy{Delay: time.Millisecond}).QuietGap(); got != 250*time.Microsecond {
		t.Errorf("default quiet gap %v, want a quarter of the delay", got)
	}
	if got := (&Policy{Delay: time.Millisecond, Quiet: time.Microsecond}).QuietGap(); got != time.Microsecond {
		t.Errorf("quiet gap %v, want the one set", got)
	}
	var nilPolicy *Policy
	if got := nilPolicy.QuietGap(); got != 0 {
		t.Errorf("nil policy quiet gap %v", got)
	}
}
