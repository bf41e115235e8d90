package main

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Names of the bench echo service, as the registry and the nodes see them.
const (
	echoPackage   = "ketnoi.bench.v1"
	echoService   = echoPackage + ".EchoService"
	echoMethod    = "/" + echoService + "/Echo"
	downloadCall  = "/" + echoService + "/Download"
	echoProtoFile = "ketnoi/bench/v1/echo.proto"
)

// rawCodec moves messages as their wire bytes, so that the bench measures
// transport and proxying, not protobuf reflection. Its name is "proto"
// because peers must see ordinary protobuf traffic.
type rawCodec struct{}

// Name returns "proto".
func (rawCodec) Name() string { return "proto" }

// Marshal sends a *[]byte as it is. The slice must not change afterwards.
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

// Unmarshal copies the received bytes into a *[]byte.
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = data.Materialize()
	return nil
}

// payloadMessage encodes a message whose only field is bytes payload = 1:
// EchoRequest, EchoResponse and DownloadResponse share this encoding.
func payloadMessage(n int) []byte {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(i)
	}
	b := protowire.AppendTag(make([]byte, 0, n+16), 1, protowire.BytesType)
	return protowire.AppendBytes(b, payload)
}

// downloadRequest encodes DownloadRequest{total_bytes, chunk_bytes}.
func downloadRequest(total int64, chunk int32) []byte {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(total))
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(chunk))
}

// parseDownloadRequest decodes DownloadRequest, skipping unknown fields.
func parseDownloadRequest(b []byte) (total int64, chunk int32, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return 0, 0, protowire.ParseError(m)
			}
			if num == 1 {
				total = int64(v)
			} else {
				chunk = int32(v)
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0, 0, protowire.ParseError(m)
		}
		b = b[m:]
	}
	return total, chunk, nil
}

// maxChunk bounds one Download message; the nodes accept 4 MiB.
const maxChunk = 2 << 20

// echoServer implements the bench service over raw bytes.
type echoServer struct{}

// echo returns the request bytes: EchoRequest and EchoResponse have the
// same wire form.
func (echoServer) echo(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var b []byte
	if err := dec(&b); err != nil {
		return nil, err
	}
	return &b, nil
}

// download streams total_bytes of payload in chunk_bytes messages. The
// messages are encoded once and sent many times.
func (echoServer) download(_ any, ss grpc.ServerStream) error {
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	total, chunk, err := parseDownloadRequest(req)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "download request: %v", err)
	}
	if total < 0 || chunk <= 0 || chunk > maxChunk {
		return status.Errorf(codes.InvalidArgument, "want total_bytes >= 0 and 0 < chunk_bytes <= %d", maxChunk)
	}
	full := payloadMessage(int(chunk))
	for sent := int64(0); sent < total; sent += int64(chunk) {
		msg := full
		if rest := total - sent; rest < int64(chunk) {
			msg = payloadMessage(int(rest))
		}
		if err := ss.SendMsg(&msg); err != nil {
			return err
		}
	}
	return nil
}

// echoServiceDesc registers echoServer by hand, with no generated code.
var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: echoService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: echoServer{}.echo},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Download", Handler: echoServer{}.download, ServerStreams: true},
	},
	Metadata: echoProtoFile,
}

// downloadStreamDesc is the client side of Download.
var downloadStreamDesc = grpc.StreamDesc{StreamName: "Download", ServerStreams: true}

// newEchoServer returns a gRPC server with the bench service registered.
func newEchoServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(8<<20), grpc.MaxSendMsgSize(8<<20))
	s := grpc.NewServer(opts...)
	s.RegisterService(&echoServiceDesc, echoServer{})
	return s
}

// descriptorSet returns the serialized FileDescriptorSet of
// ketnoi/bench/v1/echo.proto, built in code and checked with protodesc.
func descriptorSet() ([]byte, error) {
	bytesField := func(name string, num int32) *descriptorpb.FieldDescriptorProto {
		return field(name, num, descriptorpb.FieldDescriptorProto_TYPE_BYTES)
	}
	msg := func(name string, fields ...*descriptorpb.FieldDescriptorProto) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields}
	}
	typ := func(name string) *string { return proto.String("." + echoPackage + "." + name) }
	fd := &descriptorpb.FileDescriptorProto{
		Name:    proto.String(echoProtoFile),
		Package: proto.String(echoPackage),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			msg("EchoRequest", bytesField("payload", 1)),
			msg("EchoResponse", bytesField("payload", 1)),
			msg("DownloadRequest",
				field("total_bytes", 1, descriptorpb.FieldDescriptorProto_TYPE_INT64),
				field("chunk_bytes", 2, descriptorpb.FieldDescriptorProto_TYPE_INT32)),
			msg("DownloadResponse", bytesField("payload", 1)),
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("EchoService"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Echo"), InputType: typ("EchoRequest"), OutputType: typ("EchoResponse")},
				{Name: proto.String("Download"), InputType: typ("DownloadRequest"),
					OutputType: typ("DownloadResponse"), ServerStreaming: proto.Bool(true)},
			},
		}},
	}
	if _, err := protodesc.NewFile(fd, nil); err != nil {
		return nil, fmt.Errorf("build echo descriptor: %w", err)
	}
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{fd}})
	if err != nil {
		return nil, fmt.Errorf("marshal echo descriptor set: %w", err)
	}
	return b, nil
}

func field(name string, num int32, t descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
	return &descriptorpb.FieldDescriptorProto{
		Name:     proto.String(name),
		JsonName: proto.String(jsonName(name)),
		Number:   proto.Int32(num),
		Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		Type:     t.Enum(),
	}
}

// jsonName is protoc's lowerCamelCase of a snake_case field name.
func jsonName(s string) string {
	out := make([]byte, 0, len(s))
	upper := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '_':
			upper = true
		case upper && 'a' <= c && c <= 'z':
			out = append(out, c-'a'+'A')
			upper = false
		default:
			out = append(out, c)
			upper = false
		}
	}
	return string(out)
}

// errShortDownload is returned when a Download ends before total_bytes.
var errShortDownload = errors.New("download ended early")
