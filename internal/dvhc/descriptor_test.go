package dvhc

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/apipb"
)

func TestDescriptorSet(t *testing.T) {
	b, err := DescriptorSet()
	if err != nil {
		t.Fatalf("DescriptorSet: %v", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatalf("unmarshal descriptor set: %v", err)
	}
	var names []string
	for _, f := range set.GetFile() {
		names = append(names, f.GetName())
	}
	if diff := cmp.Diff([]string{"vn/gov/dvhc/v1/admin_unit.proto"}, names); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}

	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("descriptor set does not resolve: %v", err)
	}
	d, err := files.FindDescriptorByName("vn.gov.dvhc.v1.AdminUnitService")
	if err != nil {
		t.Fatalf("find service: %v", err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("vn.gov.dvhc.v1.AdminUnitService is a %T, want a service", d)
	}
	var methods []string
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		kind := "unary"
		if m.IsStreamingServer() {
			kind = "server-streaming"
		}
		methods = append(methods, string(m.Name())+" "+kind)
	}
	want := []string{"GetUnit unary", "ListCommunes server-streaming", "ConvertOldUnit unary"}
	if diff := cmp.Diff(want, methods); diff != "" {
		t.Errorf("methods (-want +got):\n%s", diff)
	}
}

func TestDescriptorSetIsDeterministic(t *testing.T) {
	a, err := DescriptorSet()
	if err != nil {
		t.Fatalf("DescriptorSet: %v", err)
	}
	b, err := DescriptorSet()
	if err != nil {
		t.Fatalf("DescriptorSet: %v", err)
	}
	if string(a) != string(b) {
		t.Errorf("two calls of DescriptorSet returned different bytes")
	}
}

func TestAddFileOrdersImportsFirst(t *testing.T) {
	// api.proto imports source_context.proto and type.proto; type.proto
	// imports any.proto and source_context.proto again.
	set := &descriptorpb.FileDescriptorSet{}
	addFile(set, make(map[string]bool), apipb.File_google_protobuf_api_proto)
	var names []string
	for _, f := range set.GetFile() {
		names = append(names, f.GetName())
	}
	want := []string{
		"google/protobuf/source_context.proto",
		"google/protobuf/any.proto",
		"google/protobuf/type.proto",
		"google/protobuf/api.proto",
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if _, err := protodesc.NewFiles(set); err != nil {
		t.Errorf("descriptor set does not resolve: %v", err)
	}
}
