package cluster

// PID returns the operating-system process id of p, so that tools can read
// its resource use from /proc while it runs.
func (p *Proc) PID() int { return p.cmd.Process.Pid }
