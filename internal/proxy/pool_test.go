package proxy

import "testing"

func TestPoolTiers(t *testing.T) {
	p := NewPool()
	for _, tc := range []struct{ n, cap int }{
		{1, 1 << 10}, {1024, 1 << 10}, {1025, 2 << 10},
		{64 << 10, 64 << 10}, {64<<10 + 100, 128 << 10},
		{1 << 20, 1 << 20}, {8 << 20, 8 << 20}, {8<<20 + 1, 8<<20 + 1},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.cap)
		}
		p.Put(b)
	}
}

func TestPoolReusesWholeCapacity(t *testing.T) {
	p := NewPool()
	b := p.Get(3000)
	(*b)[0] = 7
	p.Put(b)
	// A buffer returned with a shorter length still serves a longer Get
	// of its tier.
	c := p.Get(4000)
	if len(*c) != 4000 || cap(*c) != 4096 {
		t.Fatalf("Get(4000): len %d cap %d", len(*c), cap(*c))
	}
	// Foreign capacities are not pooled.
	odd := make([]byte, 3000)
	p.Put(&odd)
	if d := p.Get(3000); cap(*d) != 4096 {
		t.Errorf("a buffer of capacity 3000 came back from the pool")
	}
}
