package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/pki"
)

// errNoNginx means the nginx baseline cannot run on this machine.
var errNoNginx = errors.New("nginx not found (install the Debian package nginx to get the baseline)")

// nginxConf is one nginx instance of the baseline: ingress A takes h2c from
// the client and forwards over mTLS, egress B terminates mTLS and forwards
// h2c to the backend. Upstream keepalive keeps both hops on pooled
// connections, as the nodes keep theirs.
var nginxConf = template.Must(template.New("nginx").Parse(`# nginx baseline {{.Name}}, written by the ketnoi bench
daemon off;
master_process on;
worker_processes {{.Workers}};
{{if .Root}}user root;
{{end}}pid {{.Dir}}/{{.Name}}.pid;
error_log {{.Dir}}/{{.Name}}-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/{{.Name}}-tmp/body;
    proxy_temp_path {{.Dir}}/{{.Name}}-tmp/proxy;
    fastcgi_temp_path {{.Dir}}/{{.Name}}-tmp/fastcgi;
    uwsgi_temp_path {{.Dir}}/{{.Name}}-tmp/uwsgi;
    scgi_temp_path {{.Dir}}/{{.Name}}-tmp/scgi;
    client_max_body_size 0;
    keepalive_requests 10000000;
    grpc_read_timeout 120s;
    grpc_send_timeout 120s;
    upstream next {
        server {{.Upstream}};
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
{{- if .Ingress}}
        listen {{.Listen}} http2;
        location / {
            grpc_pass grpcs://next;
            grpc_ssl_certificate {{.Dir}}/{{.Name}}.pem;
            grpc_ssl_certificate_key {{.Dir}}/{{.Name}}-key.pem;
            grpc_ssl_trusted_certificate {{.Dir}}/bundle.pem;
            grpc_ssl_verify on;
            grpc_ssl_verify_depth 1;
            grpc_ssl_name localhost;
            grpc_ssl_protocols TLSv1.3;
            grpc_ssl_session_reuse on;
        }
{{- else}}
        listen {{.Listen}} ssl http2;
        ssl_certificate {{.Dir}}/{{.Name}}.pem;
        ssl_certificate_key {{.Dir}}/{{.Name}}-key.pem;
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_verify_client on;
        ssl_verify_depth 1;
        ssl_client_certificate {{.Dir}}/bundle.pem;
        location / {
            grpc_pass grpc://next;
        }
{{- end}}
    }
}
`))

type nginxParams struct {
	Name, Dir, Listen, Upstream string
	Ingress, Root               bool
	Workers                     string // a count or "auto"
}

// nginxBinary finds nginx on PATH or where Debian installs it.
func nginxBinary() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errNoNginx
}

// nginxVersion returns what nginx -v prints, or "" without nginx.
func nginxVersion() string {
	bin, err := nginxBinary()
	if err != nil {
		return ""
	}
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}

// startNginx runs two nginx instances in dir as children of this process:
// client -> A (h2c) -> mTLS -> B -> backend (h2c). Each has workers
// worker processes, "auto" for one per CPU.
func startNginx(ctx context.Context, ca *pki.CA, dir, backend, workers string) (*topology, error) {
	bin, err := nginxBinary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writeNginxPKI(ca, dir); err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	root := os.Geteuid() == 0
	b, err := runNginx(ctx, bin, nginxParams{Name: "b", Dir: dir, Listen: ports[1], Upstream: backend,
		Root: root, Workers: workers})
	if err != nil {
		return nil, err
	}
	a, err := runNginx(ctx, bin, nginxParams{Name: "a", Dir: dir, Listen: ports[0], Upstream: ports[1],
		Ingress: true, Root: root, Workers: workers})
	if err != nil {
		b.stop()
		return nil, err
	}
	return pairTopology("nginx mTLS", "nginx", a, b, ports[0])
}

// runNginx starts one nginx and waits for its listener and workers.
func runNginx(ctx context.Context, bin string, p nginxParams) (*proc, error) {
	var conf strings.Builder
	if err := nginxConf.Execute(&conf, p); err != nil {
		return nil, fmt.Errorf("nginx %s config: %w", p.Name, err)
	}
	confFile := filepath.Join(p.Dir, p.Name+".conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(p.Dir, p.Name+"-tmp"), 0o755); err != nil {
		return nil, err
	}
	errLog := filepath.Join(p.Dir, p.Name+"-error.log")
	outFile := filepath.Join(p.Dir, p.Name+".out")
	n, err := startProc(exec.Command(bin, "-p", p.Dir, "-c", confFile, "-e", errLog), outFile)
	if err != nil {
		return nil, fmt.Errorf("start nginx %s: %w", p.Name, err)
	}
	// nginx is ready once its workers exist; the master and they are
	// watched together.
	err = n.waitReady(ctx, p.Listen, func() []int {
		if workers := childrenOf(n.cmd.Process.Pid); len(workers) > 0 {
			return append([]int{n.cmd.Process.Pid}, workers...)
		}
		return nil
	})
	if err != nil {
		n.stop()
		log, _ := os.ReadFile(errLog)
		stdout, _ := os.ReadFile(outFile)
		return nil, fmt.Errorf("nginx %s: %w: %s%s", p.Name, err, strings.TrimSpace(string(stdout)),
			strings.TrimSpace(string(log)))
	}
	return n, nil
}

// writeNginxPKI writes the bundle, A's client SVID and B's server
// certificate. nginx checks a server by DNS name, not SPIFFE ID, so B's
// certificate also names localhost.
func writeNginxPKI(ca *pki.CA, dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), ca.BundlePEM(), 0o644); err != nil {
		return err
	}
	a, err := ca.IssueSVID(spiffeid.RequireFromPath(ca.TrustDomain, "/bench/nginx-a"), 2*time.Hour)
	if err != nil {
		return fmt.Errorf("issue nginx a svid: %w", err)
	}
	if err := a.Write(filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")); err != nil {
		return err
	}
	b, err := issueServerCert(ca, spiffeid.RequireFromPath(ca.TrustDomain, "/bench/nginx-b"), "localhost")
	if err != nil {
		return err
	}
	return b.Write(filepath.Join(dir, "b.pem"), filepath.Join(dir, "b-key.pem"))
}

// issueServerCert issues an SVID-like certificate that also carries a DNS
// name, for TLS peers that only check host names.
func issueServerCert(ca *pki.CA, id spiffeid.ID, dnsName string) (*pki.Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(2 * time.Hour),
		URIs:         []*url.URL{id.URL()},
		DNSNames:     []string{dnsName},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue %s certificate: %w", dnsName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &pki.Issued{Cert: cert, Key: key}, nil
}

// freePorts returns n loopback addresses that were free a moment ago.
func freePorts(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
