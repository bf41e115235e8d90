package dvhc

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// DescriptorSet returns a serialized google.protobuf.FileDescriptorSet
// holding vn/gov/dvhc/v1/admin_unit.proto and every file it imports,
// directly or not, each file after its imports. The registry uses it to
// describe the service to nodes and tools.
func DescriptorSet() ([]byte, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := make(map[string]bool)
	addFile(set, seen, dvhcv1.File_vn_gov_dvhc_v1_admin_unit_proto)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("marshal descriptor set: %w", err)
	}
	return b, nil
}

// addFile appends fd to set after its imports, skipping files already seen.
func addFile(
	set *descriptorpb.FileDescriptorSet,
	seen map[string]bool,
	fd protoreflect.FileDescriptor,
) {
	if seen[fd.Path()] {
		return
	}
	seen[fd.Path()] = true
	imports := fd.Imports()
	for i := range imports.Len() {
		addFile(set, seen, imports.Get(i).FileDescriptor)
	}
	set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
}
