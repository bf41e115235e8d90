// Command demo runs the ketnoi walking skeleton on loopback with real data:
// a registry, the Government Office, Home Affairs and Finance nodes, and the
// Home Affairs administrative-units backend. It makes three calls through
// the nodes with a client generated from the proto, then shows the evidence
// both nodes kept, and stops everything it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/integration/cluster"
	"github.com/ketnoi/ketnoi/internal/exchange"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory with the ketnoi binaries")
	keep := fs.Bool("keep", false, "keep the state directory after the demo")
	if err := fs.Parse(args); err != nil {
		return err
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ketnoi-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	fmt.Fprintf(out, "== ketnoi demo: state in %s\n", dir)
	c, err := cluster.New(ctx, dir, binDir, io.Discard)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "== starting registry, dvhc backend and nodes vpcp (G22), bnv (G09), btc (G12); registering with the ketnoi CLI")
	if err := c.Standard(ctx); err != nil {
		return err
	}
	if err := c.WaitSynced(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "   registry %s, consumer endpoint %s, provider node %s\n",
		c.Proc("registry").Addrs["grpc"], c.LocalAddr("vpcp", cluster.ConsumerClient), c.Proc("bnv").Addrs["federation"])

	consumer, closeC, err := client(c.LocalAddr("vpcp", cluster.ConsumerClient))
	if err != nil {
		return err
	}
	defer closeC()
	finance, closeF, err := client(c.LocalAddr("btc", cluster.FinanceClient))
	if err != nil {
		return err
	}
	defer closeF()

	fmt.Fprintf(out, "\n== 1. %s calls ConvertOldUnit(\"00013\") through its node\n", cluster.ConsumerClient)
	var trailer metadata.MD
	resp, err := consumer.ConvertOldUnit(ctx, &dvhcv1.ConvertOldUnitRequest{OldCode: "00013"}, grpc.Trailer(&trailer))
	if err != nil {
		return fmt.Errorf("ConvertOldUnit: %w", err)
	}
	fmt.Fprintf(out, "   old unit: %s %s (edition %s)\n", resp.GetOldUnit().GetCode(), resp.GetOldUnit().GetFullName(), resp.GetOldUnit().GetEdition())
	for _, s := range resp.GetSuccessors() {
		fmt.Fprintf(out, "   now part of: %s %s, province %s (%s merge)\n", s.GetUnit().GetCode(), s.GetUnit().GetFullName(),
			s.GetUnit().GetParentCode(), s.GetMergeType())
	}
	msgID := first(trailer, "ketnoi-message-id")
	fmt.Fprintf(out, "   message id %s, consumer evidence index %s\n", msgID, first(trailer, "ketnoi-evidence-index"))

	fmt.Fprintln(out, "\n== 2. ListCommunes(\"01\"): the communes of Hà Nội, streamed, every message signed and recorded")
	stream, err := consumer.ListCommunes(ctx, &dvhcv1.ListCommunesRequest{ProvinceCode: "01"})
	if err != nil {
		return err
	}
	n := 0
	var last string
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("ListCommunes after %d: %w", n, err)
		}
		n++
		last = m.GetUnit().GetFullName()
	}
	fmt.Fprintf(out, "   %d communes arrived (last: %s)\n", n, last)

	fmt.Fprintf(out, "\n== 3. %s (no grant) makes the same call\n", cluster.FinanceClient)
	_, err = finance.ConvertOldUnit(ctx, &dvhcv1.ConvertOldUnitRequest{OldCode: "00013"})
	st := status.Convert(err)
	reason, _ := exchange.PlatformReason(st)
	fmt.Fprintf(out, "   refused: code=%s reason=%s\n   message: %s\n", st.Code(), reason, st.Message())

	fmt.Fprintln(out, "\n== 4. evidence of the first exchange, read from the running nodes")
	for _, node := range []string{"vpcp", "bnv"} {
		admin := c.Proc(node).Addrs["admin"]
		fmt.Fprintf(out, "\n-- ketnoi evidence trace --node %s %s   (node %s)\n", admin, msgID, node)
		o, err := c.CLI(ctx, "evidence", "trace", "--node", admin, msgID)
		if err != nil {
			return err
		}
		fmt.Fprint(out, o)
		fmt.Fprintf(out, "-- ketnoi evidence verify --node %s   (node %s)\n", admin, node)
		o, err = c.CLI(ctx, "evidence", "verify", "--node", admin)
		if err != nil {
			return err
		}
		fmt.Fprint(out, o)
	}

	fmt.Fprintln(out, "\n== 5. stopping every process")
	c.Close()
	fmt.Fprintln(out, "done")
	return nil
}

func client(addr string) (dvhcv1.AdminUnitServiceClient, func(), error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return dvhcv1.NewAdminUnitServiceClient(conn), func() { conn.Close() }, nil
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
