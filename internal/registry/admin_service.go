package registry

import (
	"context"
	"slices"
	"strings"
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
	svc, err := s.r.parseService("service_id", req.GetServiceId(), adding)
	if err != nil {
		return nil, err
	}
	description, err := text("description", req.GetDescription(), maxDescriptionRunes)
	if err != nil {
		return nil, err
	}
	custodian, err := text("custodian", req.GetCustodian(), maxNameRunes)
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

// loadService returns a registered service, or NotFound.
func loadService(tx *bolt.Tx, serviceID string) (*registryv1.Service, error) {
	stored := &registryv1.Service{}
	ok, err := getProto(tx.Bucket(bucketServices), []byte(serviceID), stored)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "service %s is not registered", serviceID)
	}
	return stored, nil
}

// UpdateService changes the fields the request sets of a registered
// service. A new descriptor set replaces the methods; it is refused while
// a grant names a method the new set no longer defines, so that no grant
// is left naming a method the service does not have. An update that sets
// only the values already stored succeeds and publishes nothing.
func (s *adminServer) UpdateService(
	ctx context.Context,
	req *registryv1.UpdateServiceRequest,
) (*registryv1.UpdateServiceResponse, error) {
	svc, err := s.r.parseService("service_id", req.GetServiceId(), changing)
	if err != nil {
		return nil, err
	}
	edit, err := serviceEdit(req, svc.Name)
	if err != nil {
		return nil, err
	}

	var service *registryv1.Service
	version, changed, err := s.r.changeIf(func(tx *bolt.Tx, _ time.Time) error {
		stored, err := loadService(tx, svc.String())
		if err != nil {
			return err
		}
		if edit.methods != nil {
			if err := checkGrantedMethods(tx, stored.Id, edit.methods); err != nil {
				return err
			}
		}
		service = proto.Clone(stored).(*registryv1.Service)
		edit.apply(service)
		if proto.Equal(service, stored) {
			return errUnchanged
		}
		return putProto(tx.Bucket(bucketServices), []byte(service.Id), service)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "update service", err)
	}
	if changed {
		s.r.logChange(ctx, "update service "+service.Id, version)
	}
	return &registryv1.UpdateServiceResponse{Service: service, Version: version, Unchanged: !changed}, nil
}

// serviceChanges holds the checked fields of an UpdateServiceRequest; zero
// values keep what is stored.
type serviceChanges struct {
	set         []byte
	methods     []*registryv1.Method
	description string
	custodian   string
	class       registryv1.Classification
}

// serviceEdit checks the fields an update sets, the same way AddService
// checks them, and refuses an update that sets none.
func serviceEdit(req *registryv1.UpdateServiceRequest, name string) (*serviceChanges, error) {
	var (
		e   serviceChanges
		err error
	)
	if len(req.GetFileDescriptorSet()) > 0 {
		if e.methods, err = serviceMethods(req.GetFileDescriptorSet(), name); err != nil {
			return nil, err
		}
		e.set = req.GetFileDescriptorSet()
	}
	if req.GetDescription() != "" {
		if e.description, err = text("description", req.GetDescription(), maxDescriptionRunes); err != nil {
			return nil, err
		}
	}
	if req.GetCustodian() != "" {
		if e.custodian, err = text("custodian", req.GetCustodian(), maxNameRunes); err != nil {
			return nil, err
		}
	}
	if req.GetClassification() != registryv1.Classification_CLASSIFICATION_UNSPECIFIED {
		if e.class, err = classification(req.GetClassification()); err != nil {
			return nil, err
		}
	}
	unspecified := registryv1.Classification_CLASSIFICATION_UNSPECIFIED
	if e.set == nil && e.description == "" && e.custodian == "" && e.class == unspecified {
		return nil, status.Error(codes.InvalidArgument,
			"nothing to change: set file_descriptor_set, description, custodian or classification")
	}
	return &e, nil
}

// apply writes the changed fields into service.
func (e *serviceChanges) apply(service *registryv1.Service) {
	if e.set != nil {
		service.FileDescriptorSet = e.set
		service.Methods = e.methods
	}
	if e.description != "" {
		service.Description = e.description
	}
	if e.custodian != "" {
		service.Custodian = e.custodian
	}
	if e.class != registryv1.Classification_CLASSIFICATION_UNSPECIFIED {
		service.Classification = e.class
	}
}

// checkGrantedMethods refuses, naming each grant and its missing methods,
// when a grant of the service names a method that methods lacks. A grant
// without methods covers whatever the service defines and never blocks.
func checkGrantedMethods(tx *bolt.Tx, serviceID string, methods []*registryv1.Method) error {
	grants, err := grantsOf(tx, serviceID)
	if err != nil {
		return err
	}
	var blocked []string
	for _, g := range grants {
		var missing []string
		for _, name := range g.GetMethods() {
			if !slices.ContainsFunc(methods, func(m *registryv1.Method) bool { return m.GetName() == name }) {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			blocked = append(blocked, g.GetId()+" ("+strings.Join(missing, ", ")+")")
		}
	}
	if len(blocked) > 0 {
		return status.Errorf(codes.FailedPrecondition,
			"the new descriptor set of %s lacks methods that grants name: %s; revoke those grants first",
			serviceID, strings.Join(blocked, ", "))
	}
	return nil
}

// RemoveService removes a registered service that no grant names; the
// operator revokes its grants first, so that no grant outlives its service.
func (s *adminServer) RemoveService(
	ctx context.Context,
	req *registryv1.RemoveServiceRequest,
) (*registryv1.RemoveServiceResponse, error) {
	svc, err := s.r.parseService("service_id", req.GetServiceId(), changing)
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		if _, err := loadService(tx, svc.String()); err != nil {
			return err
		}
		grants, err := grantsOf(tx, svc.String())
		if err != nil {
			return err
		}
		if len(grants) > 0 {
			ids := make([]string, 0, len(grants))
			for _, g := range grants {
				ids = append(ids, g.GetId())
			}
			return status.Errorf(codes.FailedPrecondition, "service %s has grants %s; revoke them first",
				svc, strings.Join(ids, ", "))
		}
		return tx.Bucket(bucketServices).Delete([]byte(svc.String()))
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "remove service", err)
	}
	s.r.logChange(ctx, "remove service "+svc.String(), version)
	return &registryv1.RemoveServiceResponse{Version: version}, nil
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
