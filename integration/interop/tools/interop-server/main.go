// Command interop-server serves grpc-go's interop TestService, with the
// same handlers and ORCA reporting as the upstream interop server of the
// pinned grpc-go release, on an address of the caller's choice.
//
// The upstream server binds every interface and takes only a port; the
// tests run on loopback alone, so this program takes a full listen address
// (127.0.0.1:0 by default) and publishes the bound one in a ready file
// (JSON: {"grpc": "127.0.0.1:PORT"}), like the ketnoi servers do. It also
// registers the gzip compressor, which the upstream server lacks, so that
// compressed calls can be checked against it directly.
//
// With --write-descriptor-set it instead writes a serialized
// FileDescriptorSet holding grpc.testing.TestService,
// grpc.testing.UnimplementedService, xds.service.orca.v3.OpenRcaService and
// everything they import, for registering the services with the ketnoi
// registry, and exits.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
	_ "unsafe" // for go:linkname

	orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // accept and answer gzip-compressed calls
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/orca"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// allowShortORCAInterval is grpc-go's internal switch that lets the ORCA
// service report more often than every 30 s. The upstream interop server
// sets it so that the orca_oob case, which asks for a report every second,
// completes within its 30 s budget; it is reached here by its link name
// because Go's internal-package rule hides it from other modules.
//
//go:linkname allowShortORCAInterval google.golang.org/grpc/internal.ORCAAllowAnyMinReportingInterval
var allowShortORCAInterval any

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	readyFile := flag.String("ready-file", "", "write the bound address to this `file` once serving")
	descOut := flag.String("write-descriptor-set", "", "write the services' FileDescriptorSet to this `file` and exit")
	flag.Parse()

	var err error
	if *descOut != "" {
		err = writeDescriptorSet(*descOut)
	} else {
		err = serve(*listen, *readyFile)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop-server:", err)
		os.Exit(1)
	}
}

// serve runs the interop services until SIGINT or SIGTERM.
func serve(listen, readyFile string) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s := grpc.NewServer(orca.CallMetricsServerOption(nil))
	recorder := orca.NewServerMetricsRecorder()
	opts := orca.ServiceOptions{MinReportingInterval: time.Second, ServerMetricsProvider: recorder}
	allow, ok := allowShortORCAInterval.(func(*orca.ServiceOptions))
	if !ok {
		return errors.New("grpc-go no longer offers short ORCA reporting intervals; check the pinned version")
	}
	allow(&opts)
	if err := orca.Register(s, opts); err != nil {
		return fmt.Errorf("register ORCA service: %w", err)
	}
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer(interop.NewTestServerOptions{MetricsRecorder: recorder}))

	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	if err := writeReady(readyFile, lis.Addr().String()); err != nil {
		s.Stop()
		return err
	}
	fmt.Println("interop server listening on", lis.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errc:
		return err
	case <-sig:
		s.Stop()
		return nil
	}
}

// writeReady atomically writes {"grpc": addr} to path.
func writeReady(path, addr string) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(map[string]string{"grpc": addr})
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	return nil
}

// writeDescriptorSet writes the files defining the served services and all
// their imports, dependencies first.
func writeDescriptorSet(path string) error {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(testgrpc.File_grpc_testing_test_proto)
	add(orcaservicepb.File_xds_service_orca_v3_orca_proto)
	if len(set.File) == 0 {
		return errors.New("no descriptors")
	}
	b, err := proto.Marshal(set)
	if err != nil {
		return fmt.Errorf("marshal descriptor set: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write descriptor set: %w", err)
	}
	return nil
}
