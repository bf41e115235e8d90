package registry

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// AddService registers a gRPC service of a registered subsystem, with the
// methods its descriptor defines.
func (s *adminServer) AddService(
	ctx context.Context,
	req *registryv1.AddServiceRequest,
) (*registryv1.AddServiceResponse, error) {
	svc, err := s.r.parseService("service_id", req.GetServiceId())
	if err != nil {
		return nil, err
	}
	description, err := required("description", req.GetDescription())
	if err != nil {
		return nil, err
	}
	custodian, err := required("custodian", req.GetCustodian())
	if err != nil {
		return nil, err
	}
	class, err := classification(req.GetClassification())
	if err != nil {
		return nil, err
	}
	methods, err := serviceMethods(req.GetFileDescriptorSet(), svc.Name)
	if err != nil {
		return nil, err
	}
	service := &registryv1.Service{
		Id:                svc.String(),
		Provider:          svc.Provider.String(),
		GrpcService:       svc.Name,
		Description:       description,
		Custodian:         custodian,
		Classification:    class,
		Methods:           methods,
		FileDescriptorSet: req.GetFileDescriptorSet(),
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		if err := requireClient(tx, svc.Provider); err != nil {
			return err
		}
		b := tx.Bucket(bucketServices)
		if b.Get([]byte(service.Id)) != nil {
			return status.Errorf(codes.AlreadyExists, "service %s is already registered", svc)
		}
		return putProto(b, []byte(service.Id), service)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "add service", err)
	}
	s.r.logChange(ctx, "add service "+service.Id, version)
	return &registryv1.AddServiceResponse{Service: service, Version: version}, nil
}

// classification defaults an unspecified classification to normal and
// rejects values the enum does not define.
func classification(c registryv1.Classification) (registryv1.Classification, error) {
	if c == registryv1.Classification_CLASSIFICATION_UNSPECIFIED {
		return registryv1.Classification_CLASSIFICATION_NORMAL, nil
	}
	if _, ok := registryv1.Classification_name[int32(c)]; !ok {
		return 0, invalidf("classification", "unknown value %d", c)
	}
	return c, nil
}

// serviceMethods returns the methods of the named service as defined by a
// serialized FileDescriptorSet that must hold the service and everything it
// imports.
func serviceMethods(set []byte, name string) ([]*registryv1.Method, error) {
	const field = "file_descriptor_set"
	if len(set) == 0 {
		return nil, invalidf(field, "must not be empty")
	}
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(set, &fds); err != nil {
		return nil, invalidf(field, "does not parse: %v", err)
	}
	files, err := protodesc.NewFiles(&fds)
	if err != nil {
		return nil, invalidf(field, "%v", err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(name))
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if err != nil || !ok {
		return nil, invalidf(field, "does not define service %s", name)
	}

	ms := sd.Methods()
	methods := make([]*registryv1.Method, 0, ms.Len())
	for i := range ms.Len() {
		m := ms.Get(i)
		methods = append(methods, &registryv1.Method{
			Name:            string(m.Name()),
			ClientStreaming: m.IsStreamingClient(),
			ServerStreaming: m.IsStreamingServer(),
		})
	}
	return methods, nil
}
