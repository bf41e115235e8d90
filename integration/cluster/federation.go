package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Members of the standard scenario.
const (
	GovernmentOffice = "VN/NN/000.00.00.G22" // Văn phòng Chính phủ, consumer
	HomeAffairs      = "VN/NN/000.00.00.G09" // Bộ Nội vụ, provider
	Finance          = "VN/NN/000.00.00.G12" // Bộ Tài chính, has no grant

	ConsumerClient = GovernmentOffice + "/vanban"
	FinanceClient  = Finance + "/ketoan"
	ProviderSub    = HomeAffairs + "/dvhc"
	AdminUnits     = ProviderSub + "/vn.gov.dvhc.v1.AdminUnitService"
)

// StartRegistry creates the registry's identities and starts it.
func (c *Cluster) StartRegistry(ctx context.Context) error {
	if _, err := c.CLI(ctx, "certs", "svid", "--dir", c.PKI(), "--id", "spiffe://"+TrustDomain+"/registry", "--name", "registry"); err != nil {
		return err
	}
	if _, err := c.CLI(ctx, "certs", "signing", "--dir", c.PKI(), "--registry", "--name", "registry-sign"); err != nil {
		return err
	}
	_, err := c.start(ctx, "registry", "ketnoi-registry",
		"--listen", "127.0.0.1:0", "--data", filepath.Join(c.Dir, "registry.db"),
		"--trust-domain", TrustDomain, "--instance", Instance,
		"--svid-cert", c.Path("registry.pem"), "--svid-key", c.Path("registry-key.pem"),
		"--bundle", c.Path("bundle.pem"),
		"--signing-cert", c.Path("registry-sign.pem"), "--signing-key", c.Path("registry-sign-key.pem"))
	return err
}

// StartBackend starts the Home Affairs administrative-units backend.
func (c *Cluster) StartBackend(ctx context.Context) error {
	_, err := c.start(ctx, "dvhc", "ketnoi-dvhc", "--listen", "127.0.0.1:0")
	return err
}

// NodeSpec describes one agency node.
type NodeSpec struct {
	Name     string            // node name, also the process name
	Member   string            // member identifier
	Local    []string          // clients (subsystems) with a local endpoint each
	Backends map[string]string // service id to backend address
}

// StartNode issues the node's identities, writes its configuration and
// starts it. Its federation address is then in Proc(name).Addrs.
func (c *Cluster) StartNode(ctx context.Context, spec NodeSpec) error {
	parts := strings.Split(spec.Member, "/")
	spiffeID := fmt.Sprintf("spiffe://%s/node/%s/%s/%s", TrustDomain, parts[1], parts[2], spec.Name)
	if _, err := c.CLI(ctx, "certs", "svid", "--dir", c.PKI(), "--id", spiffeID, "--name", spec.Name); err != nil {
		return err
	}
	if _, err := c.CLI(ctx, "certs", "signing", "--dir", c.PKI(), "--member", spec.Member, "--name", spec.Name+"-sign"); err != nil {
		return err
	}
	dataDir := filepath.Join(c.Dir, spec.Name)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "instance: %s\ntrust_domain: %s\nmember: %s\nname: %s\ndata_dir: %s\n",
		Instance, TrustDomain, spec.Member, spec.Name, dataDir)
	fmt.Fprintf(&b, "registry:\n  address: %s\n", c.procs["registry"].Addrs["grpc"])
	fmt.Fprintf(&b, "tls:\n  cert: %s\n  key: %s\n  bundle: %s\n",
		c.Path(spec.Name+".pem"), c.Path(spec.Name+"-key.pem"), c.Path("bundle.pem"))
	fmt.Fprintf(&b, "signing:\n  cert: %s\n  key: %s\n", c.Path(spec.Name+"-sign.pem"), c.Path(spec.Name+"-sign-key.pem"))
	fmt.Fprintf(&b, "federation:\n  listen: 127.0.0.1:0\n")
	fmt.Fprintf(&b, "admin:\n  listen: 127.0.0.1:0\n")
	if len(spec.Local) > 0 {
		b.WriteString("local:\n")
		for _, cl := range spec.Local {
			fmt.Fprintf(&b, "  - listen: 127.0.0.1:0\n    client: %s\n", cl)
		}
	}
	if len(spec.Backends) > 0 {
		b.WriteString("backends:\n")
		for svc, addr := range spec.Backends {
			fmt.Fprintf(&b, "  - service: %s\n    address: %s\n", svc, addr)
		}
	}
	b.WriteString(c.NodeYAML)
	cfgPath := filepath.Join(dataDir, "node.yaml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		return err
	}
	p, err := c.start(ctx, spec.Name, "ketnoi-node", append([]string{"--config", cfgPath}, c.NodeArgs[spec.Name]...)...)
	if err != nil {
		return err
	}
	// Pin the bound ports so that a restart keeps the registered address.
	pinned := strings.Replace(b.String(), "federation:\n  listen: 127.0.0.1:0", "federation:\n  listen: "+p.Addrs["federation"], 1)
	pinned = strings.Replace(pinned, "admin:\n  listen: 127.0.0.1:0", "admin:\n  listen: "+p.Addrs["admin"], 1)
	for _, cl := range spec.Local {
		pinned = strings.Replace(pinned, "  - listen: 127.0.0.1:0\n    client: "+cl,
			"  - listen: "+p.Addrs["local/"+cl]+"\n    client: "+cl, 1)
	}
	return os.WriteFile(cfgPath, []byte(pinned), 0o644)
}

// LocalAddr returns the local endpoint of a node for a client.
func (c *Cluster) LocalAddr(node, client string) string {
	return c.procs[node].Addrs["local/"+client]
}

// Standard starts the scenario of the walking skeleton: registry, backend,
// three nodes (Government Office consumes, Home Affairs provides, Finance
// has no grant), every registration done with the CLI, and the shared
// catalogue loaded with two editions of the administrative units.
func (c *Cluster) Standard(ctx context.Context) error {
	if err := c.StartRegistry(ctx); err != nil {
		return err
	}
	if err := c.StartBackend(ctx); err != nil {
		return err
	}
	nodes := []NodeSpec{
		{Name: "vpcp", Member: GovernmentOffice, Local: []string{ConsumerClient}},
		{Name: "bnv", Member: HomeAffairs, Backends: map[string]string{AdminUnits: c.procs["dvhc"].Addrs["grpc"]}},
		{Name: "btc", Member: Finance, Local: []string{FinanceClient}},
	}
	names := map[string]string{
		GovernmentOffice: "Văn phòng Chính phủ",
		HomeAffairs:      "Bộ Nội vụ",
		Finance:          "Bộ Tài chính",
	}
	for _, n := range nodes {
		if err := c.StartNode(ctx, n); err != nil {
			return err
		}
		if _, err := c.CLI(ctx, "member", "add", "--id", n.Member, "--name", names[n.Member],
			"--signing-cert", c.Path(n.Name+"-sign.pem")); err != nil {
			return err
		}
	}
	for _, sub := range []string{ConsumerClient, ProviderSub, FinanceClient} {
		if _, err := c.CLI(ctx, "subsystem", "add", "--id", sub); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		parts := strings.Split(n.Member, "/")
		sid := fmt.Sprintf("spiffe://%s/node/%s/%s/%s", TrustDomain, parts[1], parts[2], n.Name)
		if _, err := c.CLI(ctx, "node", "add", "--id", sid, "--address", c.procs[n.Name].Addrs["federation"]); err != nil {
			return err
		}
	}
	desc := filepath.Join(c.Dir, "dvhc.binpb")
	if err := c.run(ctx, "ketnoi-dvhc", "--write-descriptor-set", desc); err != nil {
		return err
	}
	if _, err := c.CLI(ctx, "service", "add", "--id", AdminUnits, "--descriptor-set", desc,
		"--description", "Vietnam's administrative units before and after the July 2025 reorganisation",
		"--custodian", "Vụ Chính quyền địa phương, Bộ Nội vụ", "--classification", "normal"); err != nil {
		return err
	}
	if _, err := c.CLI(ctx, "grant", "add", "--client", ConsumerClient, "--service", AdminUnits); err != nil {
		return err
	}
	for _, ed := range []struct{ version, file string }{
		{"2025-03", "vn_admin_units_63_provinces_2025-03.csv"},
		{"2026-07", "vn_admin_units_34_provinces_2026-07.csv"},
	} {
		if _, err := c.CLI(ctx, "catalogue", "import", "--list", "vn-admin-units", "--version", ed.version,
			"--title", "Danh mục đơn vị hành chính "+ed.version,
			"--provenance", "General Statistics Office codes via thanglequoc/vietnamese-provinces-database (MIT)",
			"--embedded", ed.file); err != nil {
			return err
		}
	}
	_, err := c.CLI(ctx, "catalogue", "import", "--list", "iso3166-countries", "--version", "7.14.0",
		"--title", "Danh mục quốc gia (ISO 3166-1)",
		"--provenance", "npm package i18n-iso-countries 7.14.0 (MIT)",
		"--embedded", "iso3166_countries_vi_en.csv")
	return err
}

// run runs a binary to completion.
func (c *Cluster) run(ctx context.Context, binary string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, binary), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", binary, strings.Join(args, " "), err, out)
	}
	return nil
}
