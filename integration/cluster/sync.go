package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var versionRE = regexp.MustCompile(`version=(\d+)`)

// lastVersion returns the highest version in the lines of a process log
// that contain marker.
func (c *Cluster) lastVersion(name, marker string) uint64 {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
	var v uint64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		if m := versionRE.FindStringSubmatch(line); m != nil {
			if n, _ := strconv.ParseUint(m[1], 10, 64); n > v {
				v = n
			}
		}
	}
	return v
}

// WaitSynced waits until every running node has received the registry's
// latest configuration version, as their logs report it.
func (c *Cluster) WaitSynced(ctx context.Context) error {
	want := c.lastVersion("registry", "configuration changed")
	deadline := time.Now().Add(15 * time.Second)
	for {
		behind := ""
		for name, p := range c.procs {
			if p.cmd.Path != filepath.Join(c.Bin, "ketnoi-node") {
				continue
			}
			if c.lastVersion(name, "global configuration updated") < want {
				behind = name
				break
			}
		}
		if behind == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s did not receive configuration version %d", behind, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DataRaces returns the names of processes whose logs report a data race
// (binaries built with -race print "WARNING: DATA RACE" and go on).
func (c *Cluster) DataRaces() []string {
	var names []string
	for name := range c.procs {
		b, _ := os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
		if strings.Contains(string(b), "WARNING: DATA RACE") {
			names = append(names, name)
		}
	}
	return names
}
