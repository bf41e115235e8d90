package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// proc is a proxy process the bench started, with the processes whose
// resource use stands for it (nginx's master and workers, or one).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	pids []int
}

// startProc starts cmd with its output in outFile. The process gets
// SIGTERM when the bench ends, even when the bench is killed.
func startProc(cmd *exec.Cmd, outFile string) (*proc, error) {
	out, err := os.Create(outFile)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); out.Close(); close(p.done) }()
	return p, nil
}

// waitReady waits up to 10 s until addr accepts connections and pids
// names the processes to watch, then keeps them.
func (p *proc) waitReady(ctx context.Context, addr string, pids func() []int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.done:
			return errors.New("exited during startup")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			if ps := pids(); len(ps) > 0 {
				p.pids = ps
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready on %s within 10s", addr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends the process by its pid with SIGTERM, then kills it after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// pairTopology connects the client to proxy a, in front of proxy b, at
// addr; it stops both when that fails.
func pairTopology(name, label string, a, b *proc, addr string) (*topology, error) {
	conn, err := dial(addr, nil)
	if err != nil {
		a.stop()
		b.stop()
		return nil, err
	}
	return &topology{
		Name:  name,
		Conn:  conn,
		Procs: []watched{{Label: label + " A", PIDs: a.pids}, {Label: label + " B", PIDs: b.pids}},
		close: func() { a.stop(); b.stop() },
	}, nil
}
