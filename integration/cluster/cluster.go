// Package cluster starts a complete ketnoi federation from the real
// binaries on loopback: a development PKI, the registry, agency nodes and
// the Home Affairs administrative-units backend, registered through the
// ketnoi CLI exactly as an operator would. The integration tests and
// `make demo` both run on it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ketnoi/ketnoi/internal/ready"
)

// TrustDomain and Instance of every cluster.
const (
	TrustDomain = "vn.ketnoi"
	Instance    = "VN"
)

// Build compiles the binaries of the module rooted at repo into binDir,
// with extra go build flags (for example -race).
func Build(ctx context.Context, repo, binDir string, flags ...string) error {
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", binDir+string(os.PathSeparator),
		"./cmd/ketnoi", "./cmd/ketnoi-registry", "./cmd/ketnoi-node", "./cmd/ketnoi-dvhc")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// Proc is one started server process.
type Proc struct {
	Name  string
	Addrs map[string]string
	cmd   *exec.Cmd
	done  chan struct{}
	args  []string
}

// Cluster is a running federation in one directory.
type Cluster struct {
	Dir string // state, certificates, configs and logs
	Bin string // where the binaries are
	Log io.Writer
	// NodeArgs are extra arguments for every ketnoi-node started, by node
	// name (for example a profiler address).
	NodeArgs map[string][]string
	// NodeYAML is appended to every node's configuration file (for example
	// "evidence_order: overlap\n").
	NodeYAML string
	procs    map[string]*Proc
}

// New prepares a cluster in dir with binaries from bin and creates its
// development CA and operator identity.
func New(ctx context.Context, dir, bin string, log io.Writer) (*Cluster, error) {
	if log == nil {
		log = io.Discard
	}
	c := &Cluster{Dir: dir, Bin: bin, Log: log, procs: map[string]*Proc{}}
	for _, d := range []string{"pki", "logs", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if _, err := c.CLI(ctx, "certs", "init", "--dir", c.PKI(), "--trust-domain", TrustDomain); err != nil {
		return nil, err
	}
	if _, err := c.CLI(ctx, "certs", "svid", "--dir", c.PKI(), "--id", "spiffe://"+TrustDomain+"/admin/operator", "--name", "operator"); err != nil {
		return nil, err
	}
	return c, nil
}

// PKI returns the directory of certificates and keys.
func (c *Cluster) PKI() string { return filepath.Join(c.Dir, "pki") }

// Path returns a file of the PKI directory.
func (c *Cluster) Path(name string) string { return filepath.Join(c.PKI(), name) }

// CLI runs the ketnoi CLI as the operator and returns its standard output.
// A non-zero exit is an error holding the CLI's one-line reason.
func (c *Cluster) CLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, "ketnoi"), args...)
	cmd.Env = append(os.Environ(),
		"KETNOI_CERT="+c.Path("operator.pem"), "KETNOI_KEY="+c.Path("operator-key.pem"),
		"KETNOI_BUNDLE="+c.Path("bundle.pem"))
	if p, ok := c.procs["registry"]; ok {
		cmd.Env = append(cmd.Env, "KETNOI_REGISTRY="+p.Addrs["grpc"])
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	fmt.Fprintf(c.Log, "$ ketnoi %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	if err != nil {
		return stdout.String(), &CLIError{Args: args, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.String(), nil
}

// CLIError is a failed CLI run.
type CLIError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CLIError) Error() string {
	return fmt.Sprintf("ketnoi %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Stderr)
}

// ExitCode returns the CLI's exit code.
func (e *CLIError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// start launches a server binary and waits for its ready file.
func (c *Cluster) start(ctx context.Context, name, binary string, args ...string) (*Proc, error) {
	readyFile := filepath.Join(c.Dir, "run", name+".ready")
	_ = os.Remove(readyFile)
	logf, err := os.OpenFile(filepath.Join(c.Dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	full := append(append([]string(nil), args...), "--ready-file", readyFile)
	cmd := exec.Command(filepath.Join(c.Bin, binary), full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test or demo dies without stopping its servers, they go too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{}), args: args}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-wctx.Done():
		}
	}()
	addrs, err := ready.Wait(wctx, readyFile)
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("%s did not become ready (see %s): %w", name, filepath.Join(c.Dir, "logs", name+".log"), err)
	}
	p.Addrs = addrs
	c.procs[name] = p
	return p, nil
}

// Proc returns a started process by name.
func (c *Cluster) Proc(name string) *Proc { return c.procs[name] }

// Stop ends a process with SIGTERM (SIGKILL after 10 s).
func (c *Cluster) Stop(name string) {
	if p, ok := c.procs[name]; ok {
		p.stop()
	}
}

// Kill ends a process with SIGKILL, as a crash or power cut ends it for the
// process (what the kernel already holds of its writes survives), and
// waits until it has exited.
func (c *Cluster) Kill(name string) {
	if p, ok := c.procs[name]; ok {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Restart starts a stopped process again with the same arguments.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	p, ok := c.procs[name]
	if !ok {
		return fmt.Errorf("no process %s", name)
	}
	p.stop()
	_, err := c.start(ctx, name, filepath.Base(p.cmd.Path), p.args...)
	return err
}

func (p *Proc) stop() {
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

// Close stops every process.
func (c *Cluster) Close() {
	for _, p := range c.procs {
		p.stop()
	}
}
