package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

const validConfig = `member: VN/NN/000.00.00.G22
name: node1
data_dir: data
registry: {address: "127.0.0.1:7443"}
tls: {cert: n.pem, key: n-key.pem, bundle: bundle.pem}
signing: {cert: s.pem, key: s-key.pem}
federation: {listen: "127.0.0.1:0"}
local:
  - listen: "127.0.0.1:0"
    client: VN/NN/000.00.00.G22/vanban
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	p := writeConfig(t, validConfig)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Instance != "VN" || c.TrustDomain != "vn.ketnoi" || c.MaxMessageBytes != DefaultMaxMessageBytes ||
		c.ClockSkew != DefaultClockSkew || c.DeadlineMargin != DefaultDeadlineMargin {
		t.Errorf("defaults not applied: %+v", c)
	}
	if want := filepath.Join(filepath.Dir(p), "data"); c.DataDir != want {
		t.Errorf("data_dir = %q, want %q (relative to the file)", c.DataDir, want)
	}
	if *c.Batching.Delay != DefaultBatchDelay || c.Batching.MinActive != DefaultBatchMinActive {
		t.Errorf("batching = %v, %d; want the defaults %v, %d",
			*c.Batching.Delay, c.Batching.MinActive, DefaultBatchDelay, DefaultBatchMinActive)
	}
}

// A key or value the file gets wrong is reported on one line that names
// the file, the line and the key by its full path, every one of them.
func TestLoadConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, add, want string
	}{
		{"misspelt top-level key", "backend: []", "line 11: unknown key backend"},
		{"misspelt nested key", "batching: {delay: 1ms, min_actve: 3}", "line 11: unknown key batching.min_actve"},
		{"misspelt key in a list", "backends:\n  - service: x\n    adress: y", "line 13: unknown key backends[0].adress"},
		{"duration without unit", "batching: {delay: 5}",
			"line 11: batching.delay: `5` is not a duration; want a number with a unit, such as 500ms or 2m"},
		{"bad duration", "clock_skew: 2 minutes",
			"line 11: clock_skew: `2 minutes` is not a duration; want a number with a unit, such as 500ms or 2m"},
		{"text for a number", "max_message_bytes: lots", "line 11: max_message_bytes: want a whole number, not `lots`"},
		{"list for a string", "name2: x\nevidence_order: [strict]",
			"line 11: unknown key name2; line 12: evidence_order: want a string, not a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, validConfig+tt.add+"\n")
			_, err := LoadConfig(p)
			want := "parse config " + p + ": " + tt.want
			if err == nil || err.Error() != want {
				t.Errorf("LoadConfig error:\n%v\nwant\n%s", err, want)
			}
		})
	}
}

// An explicit zero delay turns batching off; it is not taken as unset.
func TestLoadConfigBatchingOff(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, validConfig+"batching: {delay: 0s, min_active: 32}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if *c.Batching.Delay != 0 || c.Batching.MinActive != 32 {
		t.Errorf("batching = %v, %d; want 0s, 32", *c.Batching.Delay, c.Batching.MinActive)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"bad member", "member: VN/NN/000.00.00.G22", "member: VN/NN/g22", "member: malformed identifier"},
		{"member of other instance", "member: VN/NN/000.00.00.G22", "member: LA/NN/000.00.00.G22", "not of instance VN"},
		{"bad node name", "name: node1", "name: Node_1!", "name:"},
		{"missing registry", `registry: {address: "127.0.0.1:7443"}`, "", "registry.address: required"},
		{"local endpoint off loopback", `  - listen: "127.0.0.1:0"`, `  - listen: "0.0.0.0:7001"`, "loopback"},
		{"local client of another member", "client: VN/NN/000.00.00.G22/vanban", "client: VN/NN/000.00.00.G09/vanban", "not a client of member"},
		{"unknown field type", "name: node1", "name: [x]", "parse config"},
		{"misspelt key", "data_dir: data", "data_dir: data\nbackend: []", "line 4: unknown key backend"},
		{"negative limit", "data_dir: data", "data_dir: data\nmax_message_bytes: -5", "must not be negative"},
		{"limit over the maximum", "data_dir: data", "data_dir: data\nmax_message_bytes: 99999999999",
			"max_message_bytes: 99999999999 is over the maximum of 67108864 (64 MiB)"},
		{"admin endpoint off loopback", "data_dir: data", "data_dir: data\nadmin: {listen: \"0.0.0.0:7090\"}",
			"admin.listen: the admin endpoint must listen on a loopback address, not 0.0.0.0"},
		{"batch delay too long", "data_dir: data", "data_dir: data\nbatching: {delay: 2s}", "batching: delay 2s must be between 0 and 1s"},
		{"negative batch delay", "data_dir: data", "data_dir: data\nbatching: {delay: -1ms}", "batching: delay -1ms"},
		{"batch delay without unit", "data_dir: data", "data_dir: data\nbatching: {delay: 5}", "parse config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Replace(validConfig, tt.from, tt.to, 1)
			if body == validConfig {
				t.Fatalf("replacement %q not applied", tt.from)
			}
			_, err := LoadConfig(writeConfig(t, body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadConfig error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestMetadataPolicy(t *testing.T) {
	md := metadata.MD{
		"x-case":         {"42"},
		"x-trace-bin":    {"\x00\x01"},
		"authorization":  {"Bearer secret"},
		"cookie":         {"a=b"},
		"ketnoi-client":  {"VN/NN/000.00.00.G01"},
		"grpc-timeout":   {"1S"},
		":authority":     {"node"},
		"user-agent":     {"grpc-go"},
		"content-length": {"89"},
		"x-other-header": {"a", "b"},
	}
	got := fromEntries(toEntries(md))
	want := metadata.MD{"x-case": {"42"}, "x-trace-bin": {"\x00\x01"}, "x-other-header": {"a", "b"}}
	if len(got) != len(want) {
		t.Fatalf("passed %v, want %v", got, want)
	}
	for k, v := range want {
		if strings.Join(got[k], ",") != strings.Join(v, ",") {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestSplitMethod(t *testing.T) {
	for in, want := range map[string][2]string{
		"/vn.gov.dvhc.v1.AdminUnitService/GetUnit": {"vn.gov.dvhc.v1.AdminUnitService", "GetUnit"},
		"/a.B/C": {"a.B", "C"},
	} {
		s, m, ok := splitMethod(in)
		if !ok || s != want[0] || m != want[1] {
			t.Errorf("splitMethod(%q) = %q, %q, %v", in, s, m, ok)
		}
	}
	for _, bad := range []string{"", "/", "/noslash", "/svc/"} {
		if _, _, ok := splitMethod(bad); ok {
			t.Errorf("splitMethod(%q) accepted", bad)
		}
	}
}

func TestBackendContextTakesMargin(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pdl, _ := parent.Deadline()
	ctx, cancel2 := backendContext(parent, 5*time.Millisecond)
	defer cancel2()
	dl, ok := ctx.Deadline()
	if !ok || pdl.Sub(dl) != 5*time.Millisecond {
		t.Errorf("backend deadline %v before caller's, want 5ms", pdl.Sub(dl))
	}
	short, cancel3 := context.WithTimeout(context.Background(), 6*time.Millisecond)
	defer cancel3()
	sdl, _ := short.Deadline()
	ctx, cancel4 := backendContext(short, 5*time.Millisecond)
	defer cancel4()
	if dl, _ := ctx.Deadline(); !dl.Equal(sdl) {
		t.Errorf("a deadline too short for the margin was changed")
	}
	none, cancel5 := backendContext(context.Background(), 5*time.Millisecond)
	defer cancel5()
	if _, ok := none.Deadline(); ok {
		t.Error("a call without deadline got one")
	}
}

func TestReplayCache(t *testing.T) {
	r := newReplayCache(time.Minute)
	now := time.Now()
	if !r.add("m1", now) || r.add("m1", now.Add(time.Second)) {
		t.Fatal("second sighting of m1 not refused")
	}
	if !r.add("m1", now.Add(3*time.Minute)) {
		t.Error("m1 still refused after the window")
	}
	if r.complete(r.started.Add(30*time.Second)) || !r.complete(r.started.Add(time.Minute)) {
		t.Error("cache must need the evidence log during its first window only")
	}
}

func TestPoolRetain(t *testing.T) {
	dialed := 0
	p := newPool(func(key, addr string) (*grpc.ClientConn, error) {
		dialed++
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
	defer p.close()
	a, _ := p.get("spiffe://vn.ketnoi/node/NN/A/n1", "127.0.0.1:1")
	if again, _ := p.get("spiffe://vn.ketnoi/node/NN/A/n1", "127.0.0.1:1"); again != a || dialed != 1 {
		t.Fatalf("second get dialed again")
	}
	p.get("spiffe://vn.ketnoi/node/NN/B/n1", "127.0.0.1:2")
	p.retain(map[string]bool{"spiffe://vn.ketnoi/node/NN/B/n1|127.0.0.1:2": true})
	if a.GetState() != connectivity.Shutdown {
		t.Errorf("dropped connection is %v, want Shutdown", a.GetState())
	}
	if _, err := p.get("spiffe://vn.ketnoi/node/NN/A/n1", "127.0.0.1:1"); err != nil || dialed != 3 {
		t.Errorf("a dropped key is dialed anew on use: dialed %d, %v", dialed, err)
	}
}

// The example files operators copy must stay valid as options are added.
func TestDeployExamplesLoad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "node-*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("deploy examples: %v, %v", files, err)
	}
	for _, f := range files {
		c, err := LoadConfig(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if filepath.Base(f) == "node-full.yaml" && (*c.Batching.Delay != time.Millisecond || c.Batching.MinActive != 8) {
			t.Errorf("%s: batching %v, %d not read", f, *c.Batching.Delay, c.Batching.MinActive)
		}
	}
}
