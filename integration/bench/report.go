package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// report collects every row and prints them as Markdown.
type report struct {
	Machine string
	Skipped []string
	Unary   []unaryRow
	Stream  []streamRow
	Took    time.Duration
	// Load averages of the machine before and after, to judge how much
	// other work shared the cores.
	LoadBefore, LoadAfter string
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// describeMachine names the CPU, core count, memory, kernel, Go and nginx.
func describeMachine() string {
	model, mem := "unknown CPU", "unknown RAM"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				mem = fmt.Sprintf("%.1f GiB RAM", float64(kb)/(1<<20))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	ngx := nginxVersion()
	if ngx == "" {
		ngx = "not installed"
	}
	return fmt.Sprintf("%d CPUs (%s), %s, Linux %s, %s %s/%s, GOMAXPROCS=%d, nginx %s",
		runtime.NumCPU(), model, mem, strings.TrimSpace(string(kernel)),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), ngx)
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s\n\n", r.Machine)
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "Skipped: %s\n\n", s)
	}
	r.printUnary(w)
	r.printStream(w)
	r.printGoals(w)
	fmt.Fprintf(w, "\nWhole run: %s; load average before %s, after %s\n",
		r.Took.Round(time.Second), r.LoadBefore, r.LoadAfter)
}

func (r *report) printUnary(w io.Writer) {
	fmt.Fprintln(w, "Unary Echo. CPU/call is user+system time per completed call of each process")
	fmt.Fprintln(w, "between client and backend (in / out: consumer / provider node, nginx A / B) and")
	fmt.Fprintln(w, "of the bench process (client and backend); peak RSS is VmHWM during the case;")
	fmt.Fprintln(w, "others is how many cores other work on the machine kept busy meanwhile.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | conc | path | req/s | MiB/s | p50 | p99 | × direct | p50 − direct | CPU/call in | CPU/call out | CPU/call bench | peak RSS in | peak RSS out | others | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, row := range r.Unary {
		d := r.directUnary(row.Case)
		c, res := row.Case, row.Res
		ratio, added := "–", "–"
		if row.Path != d.Path {
			ratio = fmt.Sprintf("%.2f", safeDiv(res.ReqPerSec(), d.Res.ReqPerSec()))
			added = signedDur(res.P50 - d.Res.P50)
		}
		mib := res.ReqPerSec() * float64(c.Payload) / (1 << 20)
		fmt.Fprintf(w, "| %s | %d | %s | %.0f | %.1f | %s | %s | %s | %s | %s | %s | %s | %.2f | %s |\n",
			sizeName(int64(c.Payload)), c.Concurrency, row.Path, res.ReqPerSec(), mib,
			dur(res.P50), dur(res.P99), ratio, added,
			perCall(row.Uses, res.Calls), perCall([]use{{CPU: row.Machine.Self}}, res.Calls),
			peakRSS(row.Uses), row.Machine.Others, errCell(res.Errors, res.FirstErr))
	}
	fmt.Fprintln(w)
}

func (r *report) printStream(w io.Writer) {
	if len(r.Stream) == 0 {
		return
	}
	fmt.Fprintln(w, "Server-streamed Download. CPU is per GiB streamed; RSS is before the stream →")
	fmt.Fprintln(w, "peak during it.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| total | message | path | MiB/s | × direct | first message | longest gap | CPU/GiB in | CPU/GiB out | CPU/GiB bench | RSS in | RSS out | others | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, row := range r.Stream {
		d := r.directStream(row.Chunk)
		res := row.Res
		ratio := "–"
		if row.Path != d.Path {
			ratio = fmt.Sprintf("%.2f", safeDiv(res.MiBPerSec(), d.Res.MiBPerSec()))
		}
		errs := 0
		if res.Err != nil {
			errs = 1
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %.2f | %s |\n",
			sizeName(row.Total), sizeName(int64(row.Chunk)), row.Path, res.MiBPerSec(), ratio,
			dur(res.FirstByte), dur(res.MaxMsgWait), perGiB(row.Uses, res.Bytes),
			perGiB([]use{{CPU: row.Machine.Self}}, res.Bytes), rssGrowth(row.Uses),
			row.Machine.Others, errCell(errs, res.Err))
	}
	fmt.Fprintln(w)
}

// directUnary returns the direct row of the same case; direct always runs
// first.
func (r *report) directUnary(c unaryCase) unaryRow {
	for _, row := range r.Unary {
		if row.Case == c && len(row.Uses) == 0 {
			return row
		}
	}
	return unaryRow{}
}

func (r *report) directStream(chunk int32) streamRow {
	for _, row := range r.Stream {
		if row.Chunk == chunk && len(row.Uses) == 0 {
			return row
		}
	}
	return streamRow{}
}

// dashes fills n empty table cells.
func dashes(n int) string { return strings.TrimSuffix(strings.Repeat("– | ", n), " | ") }

// perCall prints each process's CPU per call, "in | out", or dashes.
func perCall(uses []use, calls int) string {
	return perProcess(uses, calls > 0, func(cpu time.Duration) string {
		return fmt.Sprintf("%.0f µs", float64(cpu.Microseconds())/float64(calls))
	})
}

// perGiB prints each process's CPU per GiB streamed, or dashes.
func perGiB(uses []use, bytes int64) string {
	return perProcess(uses, bytes > 0, func(cpu time.Duration) string {
		return fmt.Sprintf("%.2f s", cpu.Seconds()*float64(1<<30)/float64(bytes))
	})
}

// perProcess prints one cell per process with format, "n/a" where its CPU
// could not be read, or dashes when there is nothing to divide by.
func perProcess(uses []use, ok bool, format func(time.Duration) string) string {
	if len(uses) == 0 || !ok {
		return dashes(max(len(uses), 2))
	}
	cells := make([]string, len(uses))
	for i, u := range uses {
		cells[i] = "n/a"
		if u.Err == nil {
			cells[i] = format(u.CPU)
		}
	}
	return strings.Join(cells, " | ")
}

func peakRSS(uses []use) string {
	if len(uses) == 0 {
		return dashes(2)
	}
	var cells []string
	for _, u := range uses {
		cells = append(cells, mib(u.PeakRSS))
	}
	return strings.Join(cells, " | ")
}

func rssGrowth(uses []use) string {
	if len(uses) == 0 {
		return dashes(2)
	}
	var cells []string
	for _, u := range uses {
		cells = append(cells, fmt.Sprintf("%s → %s", mib(u.RSSBefore), mib(u.PeakRSS)))
	}
	return strings.Join(cells, " | ")
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func errCell(n int, first error) string {
	if n == 0 {
		return "0"
	}
	msg := first.Error()
	if len(msg) > 80 {
		msg = msg[:80] + "…"
	}
	return fmt.Sprintf("%d (%s)", n, strings.ReplaceAll(msg, "|", "/"))
}

// dur prints a latency in µs below a millisecond, in ms above.
func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

func signedDur(d time.Duration) string {
	if d < 0 {
		return "−" + dur(-d)
	}
	return "+" + dur(d)
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
