package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// Linux fixes it at 100 on every architecture Go supports here.
const clockTick = 10 * time.Millisecond

// watched is a process whose CPU and memory a case measures, possibly a
// group (an nginx master and its workers).
type watched struct {
	Label string
	PIDs  []int
}

// sample is the resource use of a watched group at one moment.
type sample struct {
	CPU      time.Duration // user + system, summed over the group
	RSS      int64         // VmRSS in bytes, summed
	PeakRSS  int64         // VmHWM in bytes, summed
	ReadErr  error
	Captured time.Time
}

// read samples the group now.
func (w watched) read() sample {
	s := sample{Captured: time.Now()}
	for _, pid := range w.PIDs {
		cpu, err := cpuTime(pid)
		if err != nil {
			s.ReadErr = err
			return s
		}
		rss, hwm, err := memory(pid)
		if err != nil {
			s.ReadErr = err
			return s
		}
		s.CPU += cpu
		s.RSS += rss
		s.PeakRSS += hwm
	}
	return s
}

// resetPeak resets VmHWM of every process of the group to its current
// RSS (clear_refs value 5), so that the next peak belongs to one case.
func (w watched) resetPeak() error {
	for _, pid := range w.PIDs {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			return fmt.Errorf("reset peak rss of %d: %w", pid, err)
		}
	}
	return nil
}

// cpuTime reads utime + stime of pid.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces; fields
	// are counted after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat times", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// memory reads VmRSS and VmHWM of pid in bytes.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/%d/status %s: %w", pid, key, err)
		}
		if key == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}

// childrenOf returns the pids whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// machine is the busy CPU time of the whole machine and of this process
// (client and backends) at one moment.
type machine struct {
	Busy, Self time.Duration
	At         time.Time
}

// readMachine samples /proc/stat and this process.
func readMachine() machine {
	m := machine{At: time.Now()}
	m.Self, _ = cpuTime(os.Getpid())
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ...; guest time
	// is already part of user.
	if len(f) < 9 || f[0] != "cpu" {
		return m
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	m.Busy = time.Duration(busy) * clockTick
	return m
}

// machineUse is what the bench process and everything else on the machine
// spent during a case.
type machineUse struct {
	Self   time.Duration
	Others float64 // cores busy with work outside the measured processes
}

// since returns the use from m0 to m1, given what the watched processes
// spent in between.
func since(m0, m1 machine, watchedCPU time.Duration) machineUse {
	u := machineUse{Self: m1.Self - m0.Self}
	wall := m1.At.Sub(m0.At)
	if wall > 0 {
		u.Others = max(0, (m1.Busy-m0.Busy-u.Self-watchedCPU).Seconds()/wall.Seconds())
	}
	return u
}
