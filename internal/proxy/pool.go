package proxy

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// Pool is a gRPC buffer pool with a tier for every power of two from
// 1 KiB to 8 MiB whose buffers are not cleared when reused.
//
// gRPC's default pool clears every buffer it hands out, and its tiers jump
// from 32 KiB to 1 MiB: a node relaying a stream of 64 KiB messages cleared
// a megabyte per message, about a seventh of its CPU. Clearing is not
// needed for the buffers gRPC takes from a pool: its transport fills a
// buffer with exactly the bytes read before handing it on, and the codecs
// marshal into the whole length they ask for; capacity beyond the length
// is never read.
type Pool struct {
	tiers [maxTier - minTier + 1]sync.Pool
}

const (
	minTier = 10 // 1 KiB
	maxTier = 23 // 8 MiB
)

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{} }

var _ mem.BufferPool = (*Pool)(nil)

// tier returns the exponent of the smallest power of two holding n bytes.
func tier(n int) int {
	if n <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n, with a power-of-two capacity when n
// fits a tier.
func (p *Pool) Get(n int) *[]byte {
	t := tier(n)
	if t > maxTier {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[t-minTier].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<t)
	return &b
}

// Put returns a buffer obtained from Get; buffers of other capacities are
// left to the garbage collector.
func (p *Pool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTier || c > 1<<maxTier || c&(c-1) != 0 {
		return
	}
	p.tiers[bits.Len(uint(c))-1-minTier].Put(b)
}
