package registry

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/catalogue"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
)

// codesChunk is the number of entries in one ListCodes response.
const codesChunk = 500

// parentField is the field ListCodes filters on.
const parentField = "parent_code"

// catalogueServer serves the shared catalogue's code lists.
type catalogueServer struct {
	cataloguev1.UnimplementedCatalogueServiceServer
	r *Registry
}

// ListCodeLists returns every version of every list.
func (s *catalogueServer) ListCodeLists(
	ctx context.Context,
	_ *cataloguev1.ListCodeListsRequest,
) (*cataloguev1.ListCodeListsResponse, error) {
	var versions []*cataloguev1.CodeListVersion
	err := s.r.db.View(func(tx *bolt.Tx) error {
		var err error
		versions, err = codeListMetas(tx)
		return err
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "list code lists", err)
	}
	return &cataloguev1.ListCodeListsResponse{Versions: versions}, nil
}

// LookupCode returns one entry of one list version.
func (s *catalogueServer) LookupCode(
	ctx context.Context,
	req *cataloguev1.LookupCodeRequest,
) (*cataloguev1.LookupCodeResponse, error) {
	if err := checkListVersion(req.GetList(), req.GetVersion()); err != nil {
		return nil, err
	}
	if req.GetCode() == "" {
		return nil, invalidf("code", "must not be empty")
	}
	entry := &cataloguev1.CodeEntry{}
	err := s.r.db.View(func(tx *bolt.Tx) error {
		eb, err := entriesOf(tx, req.GetList(), req.GetVersion())
		if err != nil {
			return err
		}
		ok, err := getProto(eb, []byte(req.GetCode()), entry)
		if err != nil {
			return err
		}
		if !ok {
			return status.Errorf(codes.NotFound, "code %q is not in code list %s version %s",
				req.GetCode(), req.GetList(), req.GetVersion())
		}
		return nil
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "look up code", err)
	}
	return &cataloguev1.LookupCodeResponse{Entry: entry}, nil
}

// ListCodes streams the entries of one list version in code order, in
// chunks, optionally only those whose parent_code is the requested one.
// Each chunk is read in its own short transaction; versions never change,
// so the chunks still form one consistent listing.
func (s *catalogueServer) ListCodes(
	req *cataloguev1.ListCodesRequest,
	stream grpc.ServerStreamingServer[cataloguev1.ListCodesResponse],
) error {
	if err := checkListVersion(req.GetList(), req.GetVersion()); err != nil {
		return err
	}
	ctx := stream.Context()
	var after []byte
	for {
		chunk, last, err := s.readChunk(req, after)
		if err != nil {
			return s.r.toStatus(ctx, "list codes", err)
		}
		if len(chunk) > 0 {
			if err := stream.Send(&cataloguev1.ListCodesResponse{Entries: chunk}); err != nil {
				return err
			}
		}
		if last == nil {
			return nil
		}
		after = last
	}
}

// readChunk reads up to codesChunk matching entries after the key after (from
// the start when nil). It returns the key of the last entry it read when the
// chunk is full, and nil when it reached the end of the version.
func (s *catalogueServer) readChunk(
	req *cataloguev1.ListCodesRequest,
	after []byte,
) ([]*cataloguev1.CodeEntry, []byte, error) {
	var (
		chunk []*cataloguev1.CodeEntry
		last  []byte
	)
	err := s.r.db.View(func(tx *bolt.Tx) error {
		eb, err := entriesOf(tx, req.GetList(), req.GetVersion())
		if err != nil {
			return err
		}
		c := eb.Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			e := &cataloguev1.CodeEntry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return fmt.Errorf("decode entry %q: %w", k, err)
			}
			if req.GetParentCode() == "" || e.GetFields()[parentField] == req.GetParentCode() {
				chunk = append(chunk, e)
			}
			if len(chunk) == codesChunk {
				last = bytes.Clone(k) // bbolt keys are only valid inside the transaction
				return nil
			}
		}
		return nil
	})
	return chunk, last, err
}

// checkListVersion rejects names that no list version can have.
func checkListVersion(list, version string) error {
	if !catalogue.ValidListName(list) {
		return invalidf("list", "%q is not a list name", list)
	}
	if !catalogue.ValidVersion(version) {
		return invalidf("version", "%q is not a version label", version)
	}
	return nil
}

// entriesOf returns the entries bucket of a list version, or NotFound.
func entriesOf(tx *bolt.Tx, list, version string) (*bolt.Bucket, error) {
	b := codeListVersion(tx, list, version)
	if b == nil {
		return nil, status.Errorf(codes.NotFound, "code list %s version %s does not exist", list, version)
	}
	return b.Bucket(bucketEntries), nil
}
