package node

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging/logtest"
)

// A node still signing with a certificate its member no longer lists (a
// rotation finished before the node was switched) says so in its own log:
// otherwise only its peers' refusals (SIGNER_UNKNOWN) tell.
func TestWarnsOfUnregisteredSigningCertificate(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(time.Hour))
	var logs logtest.Buffer
	n := f.node(t, testConsumer, now, slog.New(slog.NewTextHandler(&logs, nil)))
	member, err := id.ParseMember("VN/NN/000.00.00.G22")
	if err != nil {
		t.Fatal(err)
	}
	n.signer, n.member = f.g22, member
	n.peers = newPool(nil) // nothing is dialled: the node makes no calls
	n.inbound = newInbound()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.watchRegistration(ctx) }()
	defer func() { cancel(); <-done }()

	want := fmt.Sprintf("signing certificate %x", f.g22.CertificateSHA256())
	waitFor := func(version string) bool {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			for l := range strings.SplitSeq(logs.String(), "\n") {
				if strings.Contains(l, "version="+version) && strings.Contains(l, want) {
					return true
				}
			}
		}
		return false
	}

	// Registered: the watcher has seen version 1 once it logs nothing; give
	// it a moment, then check it stayed quiet.
	time.Sleep(50 * time.Millisecond)
	if strings.Contains(logs.String(), want) {
		t.Fatalf("warned while the certificate is registered:\n%s", logs.String())
	}

	f.g22Certs = [][]byte{f.ca.Signer(t, "VN/NN/000.00.00.G22").Certificate().Raw}
	f.publish(t, 2, now.Add(time.Hour))
	if !waitFor("2") {
		t.Errorf("no warning naming %s after it was removed from the configuration:\n%s", want, logs.String())
	}
}

// A node whose configuration expires while the registry is out of reach
// says so in its log at that moment, not only in the refusals its callers
// get.
func TestLogsWhenConfigurationExpires(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(150*time.Millisecond))
	var logs logtest.Buffer
	n := f.node(t, testConsumer, now, slog.New(slog.NewTextHandler(&logs, nil)))
	member, err := id.ParseMember("VN/NN/000.00.00.G22")
	if err != nil {
		t.Fatal(err)
	}
	n.signer, n.member, n.peers, n.inbound = f.g22, member, newPool(nil), newInbound()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.watchRegistration(ctx) }()
	defer func() { cancel(); <-done }()

	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if l := logs.String(); strings.Contains(l, "global configuration expired") && strings.Contains(l, "version=1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line when the configuration expired:\n%s", logs.String())
		}
	}
}

// A backends: entry naming a service the registry does not list (often a
// typo in its identifier) is never called; the node says so once, with
// the version, and not of the backends whose services are registered.
func TestWarnsOfUnregisteredBackendService(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(time.Hour))
	var logs logtest.Buffer
	n := f.node(t, testProvider, now, slog.New(slog.NewTextHandler(&logs, nil)))
	member, err := id.ParseMember("VN/NN/000.00.00.G09")
	if err != nil {
		t.Fatal(err)
	}
	const typo = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitSevice"
	n.signer, n.member, n.peers, n.inbound = f.g09, member, newPool(nil), newInbound()
	n.cfg.Backends = []Backend{
		{Service: testService, Address: "127.0.0.1:9090"},
		{Service: typo, Address: "127.0.0.1:9091"},
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.watchRegistration(ctx) }()
	defer func() { cancel(); <-done }()

	var warning string
	deadline := time.Now().Add(5 * time.Second)
	for ; warning == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for l := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(l, "not in the global configuration") {
				warning = l
			}
		}
	}
	if !strings.Contains(warning, "service "+typo+" (backends)") || !strings.Contains(warning, "version=1") {
		t.Fatalf("warning %q, want one naming service %s of backends at version 1:\n%s", warning, typo, logs.String())
	}
	if strings.Contains(warning, testService) {
		t.Errorf("warning %q names the registered service %s", warning, testService)
	}

	// Nothing changed in the next version: the warning is not repeated.
	f.publish(t, 2, now.Add(time.Hour))
	time.Sleep(100 * time.Millisecond)
	if c := strings.Count(logs.String(), "not in the global configuration"); c != 1 {
		t.Errorf("%d warnings after an unchanged version, want 1:\n%s", c, logs.String())
	}
}
