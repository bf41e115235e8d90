package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/ketnoi/ketnoi/internal/ready"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

func TestCommandLineErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--port", "1"}, "flag provided but not defined: -port"},
		{"positional argument", []string{"serve"}, `unexpected argument "serve"`},
		{"empty listen", []string{"--listen", ""}, "--listen must not be empty"},
		{
			"bad log level", []string{"--log-level", "loud"},
			`log level "loud": want debug, info, warn or error`,
		},
		{
			"bad log format", []string{"--log-format", "xml"},
			`log format "xml": want text or json`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := cli(t.Context(), tt.args, &stderr)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			// One line, like the other binaries: no usage after a
			// mistake.
			if want := "ketnoi-dvhc: " + tt.want + "\n"; stderr.String() != want {
				t.Errorf("stderr = %q, want %q", stderr.String(), want)
			}
		})
	}

	// -h prints the usage and succeeds.
	var stderr bytes.Buffer
	if code := cli(t.Context(), []string{"-h"}, &stderr); code != 0 || !strings.Contains(stderr.String(), "-listen") {
		t.Errorf("-h: exit %d, stderr %q; want 0 and the usage", code, stderr.String())
	}
}

func TestListenFailureExitsOne(t *testing.T) {
	var stderr bytes.Buffer
	code := cli(t.Context(), []string{"--listen", "127.0.0.1:notaport"}, &stderr)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.HasPrefix(stderr.String(), "ketnoi-dvhc: listen: ") {
		t.Errorf("stderr = %q, want a line starting with %q", stderr.String(),
			"ketnoi-dvhc: listen: ")
	}
}

func TestWriteDescriptorSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dvhc.binpb")
	var stderr bytes.Buffer
	if code := cli(t.Context(), []string{"--write-descriptor-set", path}, &stderr); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read descriptor set: %v", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatalf("unmarshal descriptor set: %v", err)
	}
	var services []string
	for _, f := range set.GetFile() {
		for _, s := range f.GetService() {
			services = append(services, f.GetPackage()+"."+s.GetName())
		}
	}
	if diff := cmp.Diff([]string{"vn.gov.dvhc.v1.AdminUnitService"}, services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

func TestServe(t *testing.T) {
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- cli(ctx, []string{
			"--listen", "127.0.0.1:0", "--ready-file", readyFile, "--log-format", "json",
		}, &stderr)
	}()

	waitCtx, waitCancel := context.WithTimeout(ctx, 30*time.Second)
	defer waitCancel()
	addrs, err := ready.Wait(waitCtx, readyFile)
	if err != nil {
		cancel()
		t.Fatalf("waiting for the server (exit %d): %v", <-exit, err)
	}
	addr := addrs["grpc"]
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Errorf("ready file grpc address = %q, want 127.0.0.1 and a bound port", addr)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()

	checkUnit(t, waitCtx, conn)
	checkHealth(t, waitCtx, conn)
	checkReflection(t, waitCtx, conn)

	cancel()
	if code := <-exit; code != 0 {
		t.Errorf("exit code %d after cancellation, want 0; stderr:\n%s", code, stderr.String())
	}
	checkStartLog(t, stderr.String(), addr)
}

func checkUnit(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	resp, err := dvhcv1.NewAdminUnitServiceClient(conn).GetUnit(ctx,
		&dvhcv1.GetUnitRequest{Code: "00004"})
	if err != nil {
		t.Fatalf("GetUnit: %v", err)
	}
	if got, want := resp.GetUnit().GetFullName(), "Phường Ba Đình"; got != want {
		t.Errorf("GetUnit(00004) full name = %q, want %q", got, want)
	}
}

func checkHealth(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	client := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "vn.gov.dvhc.v1.AdminUnitService"} {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health check %q: %v", svc, err)
		}
		if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, want SERVING", svc, got)
		}
	}
}

func checkReflection(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	err = stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	if err != nil {
		t.Fatalf("reflection send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection receive: %v", err)
	}
	stream.CloseSend()
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	slices.Sort(got)
	want := []string{
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
		"vn.gov.dvhc.v1.AdminUnitService",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reflected services (-want +got):\n%s", diff)
	}
}

// checkStartLog finds the JSON start record and checks it names addr.
func checkStartLog(t *testing.T, logs, addr string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("log line %q is not JSON: %v", sc.Text(), err)
			continue
		}
		if rec["msg"] == "serving administrative units" {
			if rec["address"] != addr || rec["level"] != "INFO" {
				t.Errorf("start record %v, want level INFO and address %q", rec, addr)
			}
			return
		}
	}
	t.Errorf("no start record in logs:\n%s", logs)
}
