// Package shutdown stops gRPC servers the way every ketnoi binary does:
// in-flight calls get a grace period, then connections are closed, so a
// long stream can never hold a process open.
package shutdown

import (
	"sync"
	"time"

	"google.golang.org/grpc"
)

// GRPC stops servers in parallel: each finishes its calls for up to grace,
// then is stopped hard. It returns when every server has stopped.
func GRPC(grace time.Duration, servers ...*grpc.Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			done := make(chan struct{})
			go func() {
				s.GracefulStop()
				close(done)
			}()
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C:
				s.Stop()
				<-done
			}
		})
	}
	wg.Wait()
}
